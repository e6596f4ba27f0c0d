"""Every result of a store as one tidy table (``run_bench.py --export results.csv``).

One row per result file, the shape people load into notebooks (``pd.read_csv``): the cell's
identity, its table row label, config hashes, the protocol's main metric and every scalar metric
(fractions, as stored), the seed, the code version and the wall time.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from harness.config import config_hash
from harness.errors import BenchError
from harness.io import atomic_path
from harness.registry import PROTOCOLS, load_plugins
from harness.tables import Grid, method_setting

#: The columns every export starts with, in order; scalar metrics (``accuracy``, ``macro_f1``...)
#: follow, named as in the result files, empty where a protocol does not report them.
COLUMNS = (
    "protocol",      # the cell: protocol, dataset, method, variant, seed
    "dataset",
    "method",
    "variant",
    "seed",
    "row",           # the row label in the tables, e.g. "unsup3d (epochs=30)" where settings differ
    "preset",
    "config_hash",   # everything that can change the numbers (names the result file)
    "setting_hash",  # what defines the trained model (the tables' rows)
    "main_metric",   # Protocol.main_metric: the number the tables and figures show (a fraction)
    "git_sha",
    "git_dirty",
    "wall_seconds",
    "end_time",
    "executor",
    "path",
)


def frame(records: list[dict]) -> pd.DataFrame:
    """The tidy table of ``records`` (as ``harness.tables.load_results`` returns them)."""
    load_plugins()
    grid = Grid(records)
    rows = []
    for r in records:
        c, prov = r["cell"], r["provenance"]
        setting = config_hash(method_setting(r))
        protocol = PROTOCOLS.get(c["protocol"]) if c["protocol"] in PROTOCOLS else None
        row = {
            "protocol": c["protocol"],
            "dataset": c["dataset"],
            "method": c["method"],
            "variant": c["variant"],
            "seed": c["seed"],
            "row": grid.label((c["method"], c["variant"], setting)),
            "preset": r["config"]["preset"],
            "config_hash": c["config_hash"],
            "setting_hash": setting,
            "main_metric": protocol.main_metric(r["metrics"]) if protocol else float("nan"),
            "git_sha": prov["git"]["sha"],
            "git_dirty": prov["git"].get("dirty"),
            "wall_seconds": prov.get("wall_seconds"),
            "end_time": prov.get("end_time"),
            "executor": prov.get("executor", {}).get("name"),
            "path": r["_path"],
        }
        for key, value in sorted(r["metrics"].items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key if key not in COLUMNS else f"metric_{key}"] = value
        rows.append(row)
    table = pd.DataFrame(rows)
    return table[list(COLUMNS) + sorted(set(table.columns) - set(COLUMNS))]


def export(records: list[dict], path: Path) -> pd.DataFrame:
    """Write the tidy table of ``records`` as ``.csv`` or ``.parquet`` (pyarrow); returns it."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise BenchError(f"--export {path}: name a .csv or .parquet file")
    if path.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise BenchError(f"--export {path}: parquet needs pyarrow (pip install -e '.[parquet]'), or export .csv")
    if not records:
        raise BenchError("no result files in this store; run some cells first or point --results-dir at a store")
    table = frame(records)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return table
