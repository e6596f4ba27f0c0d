"""Cluster profiles: ``slurm/profiles/NAME.toml`` and ``--slurm KEY=VALUE`` as submitit parameters."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any, Sequence

from harness.errors import BenchError
from harness.provenance import REPO

PROFILES = REPO / "slurm" / "profiles"
#: Profile keys submitit shares between clusters, and the Slurm-only ones (passed as ``slurm_<key>``).
GENERIC_KEYS: dict[str, type] = {"gpus_per_node": int, "cpus_per_task": int, "mem_gb": float, "timeout_min": int}
SLURM_KEYS: dict[str, type] = {"partition": str, "array_parallelism": int, "account": str, "qos": str, "constraint": str}


def load_profile(name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """submitit parameters of a Slurm profile, with ``--slurm KEY=VALUE`` overrides applied.

    Args:
        name: a profile under ``slurm/profiles`` (``local-test``) or the path of a ``.toml`` file.
        overrides: items such as ``partition=gpu``, ``timeout_min=120`` or
            ``additional_parameters.exclude=node17``; an empty value unsets the key.

    Returns:
        Keyword arguments for ``submitit.AutoExecutor.update_parameters``. Empty values are
        dropped: submitit passes ``""`` through, and ``--account=`` is an sbatch error.
    """
    path = Path(name) if name.endswith(".toml") else PROFILES / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise BenchError(f"--slurm-profile {name}: {path} does not exist; known profiles (in {PROFILES}): {known}")
    try:
        with open(path, "rb") as handle:
            table = dict(tomllib.load(handle).get("slurm", {}))
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: not valid TOML ({exc})") from None
    types = {**GENERIC_KEYS, **SLURM_KEYS}
    valid = ", ".join([*types, "additional_parameters.KEY"])
    extra = dict(table.pop("additional_parameters", None) or {})
    unknown = sorted(set(table) - set(types))
    if unknown:  # a typo would otherwise silently do nothing
        raise BenchError(f"{path}: unknown key(s) {', '.join(unknown)} in [slurm]; valid keys: {valid}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise BenchError(f"--slurm {item!r}: expected KEY=VALUE, e.g. --slurm partition=gpu")
        if key.startswith("additional_parameters."):
            extra[key.partition(".")[2]] = True if value.lower() == "true" else value
        elif key in types:
            table[key] = _parse(value, types[key], item)
        else:
            raise BenchError(f"--slurm {item!r}: unknown key {key!r}; valid keys: {valid}")
    params = {(k if k in GENERIC_KEYS else f"slurm_{k}"): v for k, v in table.items() if v not in ("", None)}
    extra = {k: v for k, v in extra.items() if v not in ("", None)}
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def _parse(value: str, kind: type, item: str) -> Any:
    """A ``--slurm`` value of the key's type; ``""`` unsets the key."""
    if value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise BenchError(f"--slurm {item!r}: expected a value of type {kind.__name__}") from None


def check_slurm_tools() -> None:
    """Fail early, as one line, where Slurm cannot be reached."""
    for tool in ("sbatch", "squeue", "sacct"):
        if shutil.which(tool) is None:
            raise BenchError(
                f"--executor slurm: `{tool}` is not on PATH; run from a Slurm login node "
                "(see slurm/README.md) or use --executor local"
            )
