"""Durable atomic writes, safe loading and a checked on-disk cache.

- Writes go to a temporary file beside the target, are fsynced, renamed onto the target and the
  folder is fsynced: a killed process or a power loss leaves the old file or the new one, never a
  partial or empty one. Temporary files left by killed writers are removed by ``clean_temporary``.
- Tensor files are loaded with ``torch.load(weights_only=True)``: a file can hold tensors and
  plain containers, never code to run. A file that fails to load that way is refused, naming it.
- A cache entry is two files: ``<hash>.pt`` (tensors only) and ``<hash>.json`` (its size, its
  SHA-256 and the structure around the tensors, e.g. an ``ImageSet``). An entry whose tensor file
  does not match its size and checksum (truncated, damaged, or placed there by someone else) is
  rebuilt, never trusted. Processes sharing a cache build each entry once (``harness.locks``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pickle
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from harness import timing
from harness.config import config_hash
from harness.errors import BenchError
from harness.locks import file_lock

#: errno values that mean "this place cannot be written" (a user's problem, not a bug).
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
#: Temporary files of ``atomic_path``: ``.<name>.<host>.<pid>.<random>.tmp``.
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]*)\.(?P<pid>\d+)\.[^.]+\.tmp$")
#: Cache-entry format: bump when the layout of the two files changes.
CACHE_FORMAT = 1
#: The only classes a cache entry may rebuild (by name, from its JSON), registered with ``cacheable``.
CACHEABLE: dict[str, type] = {}


def unwritable(path: Path, exc: OSError) -> BenchError:
    """The one-line error for a place that cannot be written."""
    reason = exc.strerror or exc.__class__.__name__
    return BenchError(f"cannot write {path} ({reason}); free some space or point --results-dir / --cache-dir at a writable folder")


def make_dirs(path: Path) -> None:
    """``mkdir -p``, with the one-line error when that is not possible."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in UNWRITABLE or exc.errno == errno.EEXIST:
            raise unwritable(path, exc) from None
        raise


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed onto ``path``."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{socket.gethostname().split('.')[0]}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise unwritable(path, exc) from None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())  # the content is on disk before the name points at it
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
        fsync_dir(path.parent)  # and the new name survives a power loss
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise unwritable(path, exc) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def torch_save(path: Path, obj: Any) -> None:
    """Save tensors and plain containers (what ``torch_load`` accepts back)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: Path) -> Any:
    """Load a tensor file without running code from it; refuse anything else, naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as exc:
        raise BenchError(
            f"refusing {path}: it does not load as plain tensors ({load_failure(exc)}); "
            "it is damaged or was not written by this harness: delete it and rerun"
        ) from None


def load_failure(exc: Exception) -> str:
    """The informative part of torch.load's (long, multi-line) complaint."""
    text = str(exc)
    if "Weights only load failed" in text:  # torch names the offending global on a line of its own
        detail = next((line.strip().rstrip(".") for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
        return "it holds objects, not only tensors" + (f": {detail}" if detail else "")
    return " ".join(text.split(". ")[0].split())[:200] or exc.__class__.__name__


# --- temporary files of killed writers -----------------------------------------------------------
def process_start(pid: int) -> float | None:
    """Start time (Unix seconds) of the live process ``pid`` on this host; None if there is none.

    Where the start time cannot be read (no ``/proc``), a live process counts as started at 0,
    i.e. before any file: it might own them.
    """
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return 0.0


def clean_temporary(*folders: Path) -> list[Path]:
    """Remove temporary files that killed writers left under ``folders``; returns them.

    A temporary file names its writer's host and process id. It is removed only when it was
    written on this host and no live process could own it: the process is gone, or the process
    now holding that id started after the file was last written (the id was reused). Files of
    other hosts are left alone: their writers may still be running.
    """
    host = socket.gethostname().split(".")[0]
    removed = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for root, _, files in os.walk(folder):
            for name in files:
                match = TEMPORARY.match(name)
                if not match or match["host"] != host:
                    continue
                path = Path(root) / name
                try:
                    written = path.stat().st_mtime
                except FileNotFoundError:  # its writer finished meanwhile
                    continue
                started = process_start(int(match["pid"]))
                if started is None or started > written + 1.0:  # 1 s: clock-tick rounding of the start time
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
    return removed


# --- the cache ------------------------------------------------------------------------------------
def cacheable(cls: type) -> type:
    """Allow a dataclass of tensors and plain values in cache entries (class decorator)."""
    CACHEABLE[cls.__name__] = cls
    return cls


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON structure of ``value`` with its tensors moved into ``tensors`` (referenced by key)."""
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value
        return {"tensor": key}
    if dataclasses.is_dataclass(value) and CACHEABLE.get(type(value).__name__) is type(value):
        return {"dataclass": type(value).__name__, "fields": {f.name: _encode(getattr(value, f.name), tensors) for f in dataclasses.fields(value)}}
    if isinstance(value, (tuple, list)):
        items = [_encode(v, tensors) for v in value]
        return {"tuple": items} if isinstance(value, tuple) else {"list": items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, tensors) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot cache a {type(value).__name__}; register it with harness.io.cacheable or convert it")


def _decode(node: Any, tensors: dict[str, torch.Tensor], path: Path) -> Any:
    """Inverse of ``_encode``; only registered dataclasses are rebuilt (no code comes from the file)."""
    kind, body = next(iter(node.items()))
    if kind == "tensor":
        return tensors[body]
    if kind == "dataclass":
        if body not in CACHEABLE:
            raise BenchError(f"refusing {path}: it names {body!r}, which no cache entry may hold; delete the file")
        return CACHEABLE[body](**{k: _decode(v, tensors, path) for k, v in node["fields"].items()})
    if kind in ("tuple", "list"):
        items = [_decode(v, tensors, path) for v in body]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: _decode(v, tensors, path) for k, v in body.items()}
    return body


def file_digest(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks (``hashlib.file_digest`` needs Python 3.11)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_problem(tensor_file: Path, meta_file: Path) -> str | None:
    """Why a cache entry cannot be trusted (missing, truncated, damaged), or None if it can."""
    try:
        meta = json.loads(meta_file.read_text())
        size, digest = int(meta["bytes"]), str(meta["sha256"])
        if meta.get("format") != CACHE_FORMAT:
            return f"format {meta.get('format')}, expected {CACHE_FORMAT}"
    except FileNotFoundError:
        return "its description is missing"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{meta_file.name} is not a cache description"
    actual = tensor_file.stat().st_size
    if actual != size:
        return f"{actual} bytes where {size} were written"
    if file_digest(tensor_file) != digest:
        return "its checksum does not match"
    return None


def cached(cache_dir: Path, kind: str, key: dict, build: Callable[[], Any]) -> Any:
    """Return ``build()``, computing it once per ``key`` and storing it under ``cache_dir/kind``.

    A stored entry is used only when its tensor file matches the size and checksum in its JSON;
    otherwise it is rebuilt (and the run says so). A matching file that still does not load as
    plain tensors, or names a class that may not be cached, is refused. Processes sharing the
    cache build an entry once: the builder holds ``<hash>.lock``, the others wait and read what
    it wrote (a valid entry is read without the lock).
    """
    folder = Path(cache_dir) / kind
    stem = config_hash(key)
    tensor_file, meta_file = folder / f"{stem}.pt", folder / f"{stem}.json"
    if tensor_file.exists() and cache_problem(tensor_file, meta_file) is None:
        return _read_entry(tensor_file, meta_file)
    make_dirs(folder)
    with file_lock(folder / f"{stem}.lock", f"the {kind} cache entry {stem}"):
        if tensor_file.exists():  # another process may have written it while we waited
            problem = cache_problem(tensor_file, meta_file)
            if problem is None:
                return _read_entry(tensor_file, meta_file)
            print(f"cache: {tensor_file} cannot be trusted ({problem}); rebuilding it", file=sys.stderr, flush=True)
        with timing.stage(f"build {kind}"):
            value = build()
        tensors: dict[str, torch.Tensor] = {}
        structure = _encode(value, tensors)
        torch_save(tensor_file, tensors)
        meta = {"format": CACHE_FORMAT, "bytes": tensor_file.stat().st_size, "sha256": file_digest(tensor_file),
                "value": structure, "key": key, "written": time.time()}
        write_json(meta_file, meta)  # last: until it is there, the entry is not trusted
    return value


def _read_entry(tensor_file: Path, meta_file: Path) -> Any:
    meta = json.loads(meta_file.read_text())
    return _decode(meta["value"], torch_load(tensor_file), tensor_file)
