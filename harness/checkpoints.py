"""Weight files made elsewhere (released checkpoints, outside encoders), read without running code.

``torch.load(weights_only=True)`` rebuilds tensors and plain containers only. A full training
checkpoint also pickles objects of its authors' own classes (Unsup3D's ``metrics_trace`` is a
``meters.MetricsTrace``), which that loader refuses, and importing the authors' modules to allow
them would run their code. Instead each such class is replaced by an empty stand-in of the same
name, so the object's data loads as attributes of the stand-in and the tensors beside it load
as usual. A stand-in can be *created* (the pickle's ``NEWOBJ``) but never *called* (``REDUCE``):
calling a named global is how a malicious pickle runs code (``builtins.exec``), and a file that
tries is refused with a one-line error naming it. Two stand-ins do more: ``collections.defaultdict``
(an optimiser's ``state`` inside a pickled scheduler) is rebuilt as a plain dict, the one call
allowed, since filling a dict runs nothing.

Both of ``torch.save``'s formats are read this way: the zip archive (PyTorch 1.6 on) and the
legacy stream of pickles that PyTorch 0.4 to 1.5 wrote (the Unsup3D, FAb-Net and TCAE releases).
The globals a file names are listed by reading its pickle's opcodes, which runs nothing.

Files are identified by content: ``file_sha256`` keys caches and result files, so a changed
file at the same path never reuses old features or results.
"""
from __future__ import annotations

import functools
import logging
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from harness.errors import BenchError
from harness.io import file_digest


class ForeignCall(Exception):
    """A pickle tried to call a global of another code base (it would run code)."""


class _ForeignClass(type):
    """Metaclass of the stand-ins: creating an instance the pickle way works, calling does not."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise ForeignCall(cls.__foreign_name__)


def stand_in(full_name: str) -> type:
    """An empty class named like ``full_name`` (``module.Class``) that refuses to be called."""
    module, _, name = full_name.rpartition(".")
    namespace = {"__module__": module, "__qualname__": name, "__foreign_name__": full_name, "__doc__": f"stand-in for {full_name}"}
    return _ForeignClass(name, (), namespace)


def _plain_dict(default_factory: Any = None) -> dict:
    """What ``collections.defaultdict(factory)`` is rebuilt as: an empty dict the pickle fills."""
    return {}


#: Globals rebuilt by a safe function of this module instead of an inert stand-in.
REBUILT = {"collections.defaultdict": _plain_dict}

#: Lines torch adds around an unpickling error's reason, and the prefix before the reason.
_ADVICE = ("Weights only load failed", "(1)", "(2)", "Check the documentation", "In PyTorch 2.6", "Please file an issue")
#: What torch's unpickler raises, with no useful message, on bytes that are no pickle.
_GARBLED = (KeyError, IndexError, struct.error)


def _reason(exc: BaseException) -> str:
    """The informative line of an exception: torch wraps unpickling errors in generic advice,
    including advice to allowlist the global, which would trust the file."""
    for line in (ln.strip() for ln in str(exc).splitlines()):
        if line and not line.startswith(_ADVICE):
            line = line.removeprefix("WeightsUnpickler error: ")
            return line.split(" Please use `torch.serialization", 1)[0]
    return exc.__class__.__name__


#: How a legacy ``torch.save`` file begins after its pickle's PROTO opcode: the magic number.
_LEGACY_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:-1]


def foreign_globals(path: Path) -> set[str]:
    """The globals a ``torch.save`` file names that torch's safe loader does not know, read from
    the pickle's opcodes (nothing is unpickled).

    Raises:
        ValueError: the file is in neither of ``torch.save``'s formats, or its pickle is damaged.
    """
    if zipfile.is_zipfile(path):
        try:
            return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except (RuntimeError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError):
            return set()  # a zip archive but not torch.save's: torch.load says why
    with open(path, "rb") as stream:
        if stream.read(2 + len(_LEGACY_HEAD))[2:] != _LEGACY_HEAD:
            raise ValueError("neither format torch.save writes")
        # the legacy stream: magic number, protocol, system info, then the object (storages
        # follow), scanned by the functions get_unsafe_globals_in_checkpoint uses on a zip's pickle
        scan = torch._weights_only_unpickler
        stream.seek(0)
        names: set[str] = set()
        try:
            for _ in range(4):
                names |= scan.get_globals_in_pkl(stream)
        except (pickle.UnpicklingError, EOFError, ValueError, *_GARBLED):
            raise ValueError("a legacy torch.save file, truncated or damaged") from None
    return names - set(scan._get_allowed_globals())


def load_weights(path: str | Path, what: str) -> Any:
    """The content of a ``.pt``/``.pth``/``.ckpt``/``.pth.tar`` or ``.safetensors`` file, tensors
    on the CPU; objects of other code bases come back as inert stand-ins holding their data.

    Args:
        path: the file.
        what: the setting that named it (e.g. ``unsup3d.checkpoint``), for error messages.

    Raises:
        BenchError: a missing file, a file that is no weight file, or one that would run code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"{what}={path}: no such file; give the path of the weight file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise BenchError(f"{what}={path}: not a readable safetensors file ({_reason(exc)})") from None
    try:
        foreign = foreign_globals(path)
    except ValueError as exc:
        raise BenchError(f"{what}={path}: not a PyTorch weight file ({exc})") from None
    allowed = [(REBUILT.get(name) or stand_in(name), name) for name in sorted(foreign)]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except ForeignCall as exc:
        raise BenchError(
            f"{what}={path}: refused to load (loading it would call {exc.args[0]}): the file would run code; "
            "use only weight files from sources you trust"
        ) from None
    except pickle.UnpicklingError as exc:
        raise BenchError(f"{what}={path}: refused to load ({_reason(exc)}); use only weight files from sources you trust") from None
    except _GARBLED:
        raise BenchError(f"{what}={path}: not a PyTorch weight file (truncated, or not written by torch.save)") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise BenchError(f"{what}={path}: not a PyTorch weight file ({_reason(exc)})") from None


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (memoised per path, size and modification time)."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


T = TypeVar("T")
#: The authors' files read last, by content (and what the reader made of them): the runner makes
#: a method more than once (checks, then each seed), and cells of several methods may name one
#: file, so each is read once. Two are held at most: a release holds 100-200 MB of weights.
_READ: dict[tuple, Any] = {}
READ_HELD = 2


def read_once(path: str | Path, setting: str, read: Callable[[Path], T], *extra: Any) -> T:
    """``read(path)``, memoised by the file's content and ``extra`` (e.g. the network shapes the
    reader checked the file against); a missing file is the one-line error naming ``setting``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"{setting}={path}: no such file; give the path of the weight file")
    key = (str(path.resolve()), file_sha256(path), *extra)
    if key not in _READ:
        while len(_READ) >= READ_HELD:
            _READ.pop(next(iter(_READ)))
        _READ[key] = read(path.resolve())
    return _READ[key]


def weights_record(path: str | Path, **extra: Any) -> dict[str, Any]:
    """What a result file records about a weight file: path, sha256, size, plus ``extra``."""
    path = Path(path).expanduser()
    return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size, **extra}


def strict_state(
    expected: dict[str, torch.Tensor],
    given: dict[str, torch.Tensor],
    source: dict[str, str],
    where: str,
    sizes: str = "the authors' networks are the paper preset: add --preset paper",
) -> None:
    """Fail with one line unless ``given`` has exactly the keys and shapes of ``expected``.

    Args:
        expected: the model's state dict (project names).
        given: the file's tensors, renamed to project names.
        source: project name -> the name in the file, so messages speak the file's language.
        where: the file and what it is loaded into, e.g. ``"ckpt.pth (latentface stage 1)"``.
        sizes: what a shape mismatch usually means for this model (which settings to check).
    """

    def names(keys: list[str]) -> str:
        shown = ", ".join(source.get(k, k) for k in sorted(keys)[:3])
        return shown + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        raise BenchError(f"{where}: missing tensors {names(missing)}; the file does not hold this model at these settings")
    if unexpected:
        raise BenchError(f"{where}: unexpected tensors {names(unexpected)}; the file holds a different model")
    wrong = [k for k in expected if tuple(given[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise BenchError(
            f"{where}: {source.get(k, k)} has shape {tuple(given[k].shape)}, the model expects {tuple(expected[k].shape)}"
            f"{f' (+{len(wrong) - 1} more)' if len(wrong) > 1 else ''}; check the size settings ({sizes})"
        )


def hub_file(path: str, name: str) -> Path:
    """The weight file a setting names (``path``), or by default ``name`` in torchvision's hub
    cache (``$TORCH_HOME/hub/checkpoints/``), where a download would have put it; may not exist."""
    return Path(path).expanduser() if path else Path(torch.hub.get_dir()) / "checkpoints" / name


_warned: set[str] = set()


def warn_once(log: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning the first time this process sees it (a fallback used by
    every cell of a sweep is said once)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
