"""Durable atomic writes, safe loading of tensor files, the checked cache, cleanup of killed writers."""
import json
import os
import subprocess
import sys

import pytest
import torch

from harness import io
from harness.datasets.base import ImageSet, PairList
from harness.errors import BenchError
from harness.io import cached, clean_temporary, torch_load, torch_save, write_json


def test_write_json_roundtrip(tmp_path):
    write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]


def test_killed_writer_leaves_no_partial_file(tmp_path):
    target = tmp_path / "result.json"
    code = (
        "import os, signal, sys; from pathlib import Path; from harness.io import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_text('{\"partial\": ')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target)])
    assert proc.returncode == -9
    assert not target.exists()
    # an earlier complete file survives a killed rewrite untouched
    write_json(target, {"complete": True})
    subprocess.run([sys.executable, "-c", code, str(target)])
    assert json.loads(target.read_text()) == {"complete": True}
    # the killed writers' temporary files are recognised and removed (their process is gone)
    leftovers = sorted(p.name for p in tmp_path.glob(".result.json.*.tmp"))
    assert len(leftovers) == 2
    assert sorted(p.name for p in clean_temporary(tmp_path)) == leftovers
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_writes_sync_the_file_before_and_the_folder_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}"))) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("rename", str(b))) or real_replace(a, b))
    write_json(tmp_path / "r.json", {"x": 1})
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "rename", "fsync"]
    assert events[0][1].endswith(".tmp")  # the content, under its temporary name
    assert events[2][1] == str(tmp_path)  # then the folder that holds the new name


def test_clean_temporary_removes_only_files_no_live_process_can_own(tmp_path):
    host = io.socket.gethostname().split(".")[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    files = {
        "dead": tmp_path / f".a.json.{host}.{dead.pid}.x1.tmp",  # its writer has exited
        "mine": tmp_path / f".b.json.{host}.{os.getpid()}.x2.tmp",  # this live process may be writing it
        "reused": tmp_path / "sub" / f".c.pt.{host}.{os.getpid()}.x3.tmp",  # older than this process: its pid was reused
        "elsewhere": tmp_path / f".d.json.othernode.{dead.pid}.x4.tmp",  # another host's writer: cannot tell
        "plain": tmp_path / "notes.tmp",  # not ours
    }
    for path in files.values():
        path.parent.mkdir(exist_ok=True)
        path.write_text("partial")
    an_hour_before_start = io.process_start(os.getpid()) - 3600
    os.utime(files["reused"], (an_hour_before_start, an_hour_before_start))
    removed = set(clean_temporary(tmp_path))
    assert removed == {files["dead"], files["reused"]}
    assert all(files[k].exists() for k in ("mine", "elsewhere", "plain"))


def test_unwritable_places_are_one_line_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BenchError, match="cannot write .*file/sub .Not a directory.") as info:
        write_json(blocker / "sub" / "r.json", {})
    assert "\n" not in str(info.value)


class Payload:
    """What an attacker would plant: unpickling it runs a command (here: creates a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # exec, not os.system: torch blocks the os module by name, not exec
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def plant(path, marker):
    """A pickle file that runs code when loaded with weights_only=False (torch.save's format)."""
    torch.save({"model": Payload(marker)}, path)


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    plant(tmp_path / "last.pt", marker)
    with pytest.raises(BenchError, match=r"refusing .*last\.pt: it does not load as plain tensors") as info:
        torch_load(tmp_path / "last.pt")
    assert "\n" not in str(info.value) and not marker.exists()
    (tmp_path / "short.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BenchError, match=r"refusing .*short\.pt"):
        torch_load(tmp_path / "short.pt")
    state = {"w": torch.arange(3.0), "epoch": 2, "history": [{"loss": 0.5}]}
    torch_save(tmp_path / "ok.pt", state)
    loaded = torch_load(tmp_path / "ok.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["history"] == state["history"]


def entry(cache, key):
    stem = io.config_hash(key)
    return cache / "kind" / f"{stem}.pt", cache / "kind" / f"{stem}.json"


def test_cache_round_trips_dataset_structures(tmp_path):
    images = ImageSet(torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), labels=torch.arange(4), class_names=("a", "b"))
    pairs = PairList(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([True, False]), torch.tensor([0, 1]))
    value = (images, pairs, {"latents": [torch.ones(2)], "n": 3, "none": None})
    builds = []
    first = cached(tmp_path, "kind", {"k": 1}, lambda: builds.append(1) or value)
    again = cached(tmp_path, "kind", {"k": 1}, lambda: pytest.fail("a valid entry is rebuilt"))
    assert builds == [1] and first is value
    got_images, got_pairs, rest = again
    assert isinstance(got_images, ImageSet) and isinstance(got_pairs, PairList)
    assert torch.equal(got_images.images, images.images) and torch.equal(got_images.labels, images.labels)
    assert got_images.identities is None and got_images.class_names == ("a", "b")
    assert torch.equal(got_pairs.same, pairs.same)
    assert torch.equal(rest["latents"][0], torch.ones(2)) and rest["n"] == 3 and rest["none"] is None
    tensor_file, meta_file = entry(tmp_path, {"k": 1})
    meta = json.loads(meta_file.read_text())
    assert meta["bytes"] == tensor_file.stat().st_size and len(meta["sha256"]) == 64


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "no description"])
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, capsys, damage):
    key = {"split": "train"}
    cached(tmp_path, "kind", key, lambda: torch.arange(1000.0))
    tensor_file, meta_file = entry(tmp_path, key)
    data = tensor_file.read_bytes()
    if damage == "truncated":
        tensor_file.write_bytes(data[: len(data) // 2])
    elif damage == "flipped byte":
        tensor_file.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    else:
        meta_file.unlink()
    builds = []
    value = cached(tmp_path, "kind", key, lambda: builds.append(1) or torch.arange(1000.0))
    assert builds == [1] and torch.equal(value, torch.arange(1000.0))
    err = capsys.readouterr().err
    assert f"{tensor_file} cannot be trusted" in err and "rebuilding it" in err
    assert cached(tmp_path, "kind", key, lambda: pytest.fail("rebuilt twice")).equal(torch.arange(1000.0))


def test_a_payload_placed_in_the_cache_is_refused_or_replaced_never_run(tmp_path):
    marker = tmp_path / "pwned"
    key = {"features": 1}
    tensor_file, meta_file = entry(tmp_path, key)
    tensor_file.parent.mkdir(parents=True)
    # With a forged description that matches the file, the file is still loaded as tensors only: refused.
    plant(tensor_file, marker)
    meta = {"format": io.CACHE_FORMAT, "bytes": tensor_file.stat().st_size, "sha256": io.file_digest(tensor_file), "value": {"tensor": "0"}}
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BenchError, match=f"refusing {tensor_file}"):
        cached(tmp_path, "kind", key, lambda: pytest.fail("a matching entry is not rebuilt"))
    # A description may only name the allow-listed classes.
    torch.save({"0": torch.ones(1)}, tensor_file)
    meta.update(bytes=tensor_file.stat().st_size, sha256=io.file_digest(tensor_file), value={"dataclass": "Popen", "fields": {}})
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BenchError, match="names 'Popen'"):
        cached(tmp_path, "kind", key, lambda: pytest.fail("a matching entry is not rebuilt"))
    # Without a matching description the file is never opened: it is rebuilt over.
    plant(tensor_file, marker)
    meta_file.unlink()
    assert torch.equal(cached(tmp_path, "kind", key, lambda: torch.zeros(2)), torch.zeros(2))
    assert not marker.exists()
    assert torch.equal(torch_load(tensor_file)["0"], torch.zeros(2))


def test_results_written_into_a_committed_store_do_not_make_the_code_dirty(tmp_path, monkeypatch):
    import subprocess

    from harness import provenance

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cell.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    assert provenance.git_state()["dirty"] is False
    (tmp_path / "results" / "cell.json").unlink()  # a rerun moves a stored result away
    assert provenance.git_state()["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state()["dirty"] is True
