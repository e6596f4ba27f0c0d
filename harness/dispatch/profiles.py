"""Cluster profiles: ``slurm/profiles/NAME.toml`` and ``--slurm KEY=VALUE`` as submitit parameters."""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Sequence

from harness.errors import BenchError
from harness.provenance import REPO

PROFILES = REPO / "slurm" / "profiles"
#: Profile keys submitit shares between clusters, and the Slurm-only ones (passed as ``slurm_<key>``).
GENERIC_KEYS: dict[str, type] = {"gpus_per_node": int, "cpus_per_task": int, "mem_gb": float, "timeout_min": int}
SLURM_KEYS: dict[str, type] = {"partition": str, "array_parallelism": int, "account": str, "qos": str, "constraint": str}
#: Keys the harness itself reads (never passed to submitit): ``max_array_size`` caps the tasks of
#: one array, ``cells_per_job`` the cells of one evaluation job.
HARNESS_KEYS: dict[str, type] = {"max_array_size": int, "cells_per_job": int}
#: Cells one evaluation job runs at most: enough to share the start-up, few enough that a job stays
#: short and a preempted one loses little.
CELLS_PER_JOB = 8
#: Slurm's default MaxArraySize, used when ``scontrol`` cannot say.
DEFAULT_MAX_ARRAY_SIZE = 1001


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
    types = {**GENERIC_KEYS, **SLURM_KEYS, **HARNESS_KEYS}
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
    params = {(k if k in GENERIC_KEYS or k in HARNESS_KEYS else f"slurm_{k}"): v for k, v in table.items() if v not in ("", None)}
    for key in HARNESS_KEYS:
        if params.get(key, 1) < 1:
            raise BenchError(f"{path}: {key} must be at least 1, got {params[key]}")
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


def submitit_params(params: dict[str, Any]) -> dict[str, Any]:
    """The profile's parameters that submitit takes (without the harness's own keys)."""
    return {k: v for k, v in params.items() if k not in HARNESS_KEYS}


def max_array_size(params: dict[str, Any]) -> int:
    """The most tasks one array may hold: the profile's ``max_array_size``, else the cluster's
    ``MaxArraySize`` (``scontrol show config``), else Slurm's default 1001.

    Slurm caps the array *index* (it must be below MaxArraySize), so arrays indexed from 0
    hold at most MaxArraySize tasks; sbatch rejects a larger one outright.
    """
    if params.get("max_array_size"):
        return int(params["max_array_size"])
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
        if match:
            return int(match.group(1))
    return DEFAULT_MAX_ARRAY_SIZE
