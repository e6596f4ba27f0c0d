"""Markdown tables and figures regenerated from the result files alone (never edited by hand).

Every registered protocol lays out its own tables and figures (``Protocol.tables``,
``Protocol.figures``); every registered ablation gets one table over the protocols its rows were
evaluated with. This module only indexes the results: rows are method variants (split by
setting only where a method was run with different settings), columns are (protocol, dataset).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

from tabulate import tabulate

from harness.config import config_hash
from harness.errors import BenchError
from harness.io import atomic_path
from harness.registry import ABLATIONS, METHODS, PROTOCOLS, Ablation, load_plugins

RowKey = tuple[str, str, str]  # method, variant, method-setting hash


def load_results(results_dir: Path) -> list[dict]:
    """Every result file under ``results_dir/<protocol>/<dataset>/``."""
    records = []
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        try:
            record = json.loads(path.read_text())
            record["cell"]["method"]  # noqa: B018 -- a result file must name its cell
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise BenchError(f"{path} is not a result file of this harness; move it out of the results folder") from None
        record["_path"] = str(path)
        records.append(record)
    return records


def method_setting(record: dict) -> dict:
    """What defines the trained model behind a result: preset, method config, pretraining data."""
    cfg = record["config"]
    return {"preset": cfg["preset"], "method": cfg["method"]["config"], "pretrain": cfg.get("pretrain")}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return out


def short_key(path: str) -> str:
    """The readable name of a setting in a row label: ``method.epochs`` -> ``epochs``."""
    for prefix in ("method.", "pretrain.config."):
        if path.startswith(prefix):
            return ("pretrain." if prefix.startswith("pretrain") else "") + path[len(prefix):]
    return path


def row_order(key: RowKey) -> tuple:
    method, variant, _ = key
    methods = list(METHODS.names())
    cls = METHODS.get(method) if method in METHODS else None
    variants = list(cls.variants) if cls else []
    return (
        methods.index(method) if method in methods else len(methods),
        variants.index(variant) if variant in variants else len(variants),
        key,
    )


class Grid:
    """Results indexed by row (method variant + setting) and column (protocol, dataset)."""

    def __init__(self, records: Iterable[dict]) -> None:
        self.all = list(records)
        self.cells: dict[RowKey, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
        self.settings: dict[RowKey, dict] = {}
        for r in self.all:
            c = r["cell"]
            setting = method_setting(r)
            key = (c["method"], c["variant"], config_hash(setting))
            self.cells[key][(c["protocol"], c["dataset"])].append(r)
            self.settings[key] = setting
        self.notes: list[str] = []

    # --- rows and columns ---------------------------------------------------------------------
    def rows(self, wanted: Optional[Iterable[tuple[str, str]]] = None, protocols: Optional[Iterable[str]] = None) -> list[RowKey]:
        """Row keys in registry order; only the (method, variant)s ``wanted`` (in that order), and
        only rows with results of one of ``protocols``, when given."""
        keys = sorted(self.cells, key=row_order)
        if protocols is not None:
            allowed = set(protocols)
            keys = [k for k in keys if any(p in allowed for p, _ in self.cells[k])]
        if wanted is None:
            return keys
        return [k for mv in wanted for k in keys if k[:2] == tuple(mv)]

    def label(self, key: RowKey) -> str:
        """``method [variant]``, plus what differs (``epochs=30``) when the method variant was run
        with several settings."""
        method, variant, _ = key
        name = method if variant == "default" else f"{method} [{variant}]"
        clashes = [k for k in self.cells if k[:2] == key[:2]]
        if len(clashes) == 1:
            return name
        flat = {k: flatten(self.settings[k]) for k in clashes}
        paths = sorted({p for f in flat.values() for p in f})
        differ = [p for p in paths if len({json.dumps(f.get(p), sort_keys=True) for f in flat.values()}) > 1]
        mine = flat[key]
        shown = [f"{short_key(p)}={mine[p] if p in mine else '-'}" for p in differ[:3]]
        more = f", +{len(differ) - 3} more" if len(differ) > 3 else ""
        return f"{name} ({', '.join(shown)}{more})"

    def columns(self, protocol: str, rows: list[RowKey]) -> list[str]:
        return sorted({d for k in rows for (p, d) in self.cells[k] if p == protocol})

    def records(self, key: RowKey, protocol: str, dataset: str) -> list[dict]:
        """The records of one table cell; where protocol settings differ, the newest setting wins."""
        records = self.cells[key].get((protocol, dataset), [])
        by_setting = defaultdict(list)
        for r in records:
            by_setting[config_hash(r["config"]["protocol"])].append(r)
        if len(by_setting) > 1:
            newest = max(records, key=lambda r: r["provenance"]["end_time"])
            keep = by_setting[config_hash(newest["config"]["protocol"])]
            self.notes.append(
                f"{self.label(key)} {protocol}/{dataset}: {len(records) - len(keep)} result(s) with other protocol settings not shown"
            )
            return keep
        return records

    def records_of(self, protocol: str) -> list[dict]:
        """Every record of one protocol."""
        return [r for r in self.all if r["cell"]["protocol"] == protocol]

    # --- tables ---------------------------------------------------------------------------------
    def protocol_table(self, protocol: type) -> str:
        """Rows = method variants with results of ``protocol``, columns = its datasets, with the
        paper's column beside each dataset the paper reports."""
        rows = self.rows(protocols=[protocol.name])
        return self.table(rows, [protocol], protocol.paper) if rows else ""

    def table(self, rows: list[RowKey], protocols: list[type], paper: dict) -> str:
        headers, getters = ["Method"], []
        for protocol in protocols:
            for dataset in self.columns(protocol.name, rows):
                headers.append(f"{dataset} {protocol.name} {protocol.metric}" if len(protocols) > 1 else f"{dataset} {protocol.metric}")
                getters.append(lambda k, p=protocol, d=dataset: p.cell(self.records(k, p.name, d)))
                if any(dataset in paper.get(k[:2], {}) for k in rows):
                    headers.append(f"{dataset} paper")
                    getters.append(lambda k, p=protocol, d=dataset: p.paper_cell(paper[k[:2]][d]) if d in paper.get(k[:2], {}) else "")
        body = [[self.label(k)] + [g(k) for g in getters] for k in rows]
        return tabulate(body, headers=headers, tablefmt="github")

    def ablation_table(self, ablation: Ablation) -> str:
        """The ablation's rows over every protocol they were evaluated with ('' for fewer than two rows)."""
        rows = self.rows(ablation.rows)
        if len(rows) < 2:  # an ablation needs something to compare with
            return ""
        protocols = [PROTOCOLS.get(p) for p in PROTOCOLS.names() if any((p, d) in self.cells[k] for k in rows for d in self.columns(p, rows))]
        return self.table(rows, protocols, ablation.paper)


def footer(records: list[dict], notes: list[str]) -> str:
    """Units, code and protocol versions, notes; deterministic, so a table regenerates byte for byte."""
    shas = sorted({r["provenance"]["git"]["sha"][:10] + ("+dirty" if r["provenance"]["git"].get("dirty") else "") for r in records})
    protocols = sorted({r["cell"]["protocol"] for r in records})
    versions = ", ".join(sorted({f"{r['cell']['protocol']} v{r['config']['protocol']['version']}" for r in records}))
    lines = ["", "Percent; mean over seeds, n = number of seeds; ± is the sd over seeds unless said otherwise."]
    lines += [PROTOCOLS.get(p).note for p in protocols if p in PROTOCOLS and PROTOCOLS.get(p).note]
    lines.append(f"Code versions (git): {', '.join(shas)}. Protocols: {versions}.")
    lines += [f"Note: {n}" for n in sorted(set(notes))]
    newest = max((r["provenance"]["end_time"] for r in records), default="")
    lines.append(f"Regenerated from {len(records)} result files, the newest finished {newest[:16].replace('T', ' ')} UTC.")
    return "\n".join(lines) + "\n"


def build_tables(records: list[dict]) -> tuple[Grid, dict[str, str]]:
    """The grid of ``records`` and every table, as ``{file stem: markdown}`` (nothing written)."""
    load_plugins()
    grid = Grid(records)
    bodies: dict[str, tuple[str, str]] = {}
    for name in PROTOCOLS.names():
        if grid.records_of(name):
            bodies.update(PROTOCOLS.get(name).tables(grid))
    for ablation in ABLATIONS.values():
        body = grid.ablation_table(ablation)
        if body:
            bodies[ablation.table] = (ablation.title, body)
    return grid, {stem: f"# {title}\n\n{body}\n{footer(records, grid.notes)}" for stem, (title, body) in bodies.items()}


def generate(results_dir: Path) -> dict[str, str]:
    """Write every table (markdown) and figure of a results store; returns {table name: markdown}."""
    results_dir = Path(results_dir)
    grid, tables = build_tables(load_results(results_dir))
    for name, text in tables.items():
        with atomic_path(results_dir / "tables" / f"{name}.md") as tmp:
            tmp.write_text(text)
    for name in PROTOCOLS.names():
        if grid.records_of(name):
            PROTOCOLS.get(name).figures(grid, results_dir / "figures")
    return tables
