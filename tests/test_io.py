import json
import subprocess
import sys

from harness.io import write_json


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
