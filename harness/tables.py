"""Markdown tables and figures regenerated from the result files alone (never edited by hand).

Table 1: expression recognition (accuracy / macro F1), Table 2: verification accuracy, Tables 3
and 4: the paper's ablations, each laid out like the paper's with its published number beside
ours where the dataset is the same. Values are percent, mean over seeds (n = seed count).
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
from tabulate import tabulate

from harness.config import config_hash
from harness.errors import BenchError
from harness.io import atomic_path
from harness.paper_numbers import ABLATION_NUMBERS, MAIN
from harness.registry import ABLATIONS, METHODS, PROTOCOLS, load_plugins

RowKey = tuple[str, str, str]  # method, variant, method-setting hash


def load_results(results_dir: Path) -> list[dict]:
    """Every result file under ``results_dir/<protocol>/<dataset>/``."""
    records = []
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        try:
            record = json.loads(path.read_text())
            record["cell"]["method"]  # noqa: B018 -- a result file must name its cell
        except (json.JSONDecodeError, KeyError, TypeError):
            raise BenchError(f"{path} is not a result file of this harness; move it out of the results folder") from None
        record["_path"] = str(path)
        records.append(record)
    return records


def method_setting(record: dict) -> str:
    """Hash of what defines the trained model (preset, method config, pretraining data)."""
    cfg = record["config"]
    return config_hash({"preset": cfg["preset"], "method": cfg["method"], "pretrain": cfg.get("pretrain")})


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
        self.cells: dict[RowKey, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
        self.presets: dict[RowKey, str] = {}
        for r in records:
            c = r["cell"]
            key = (c["method"], c["variant"], method_setting(r))
            self.cells[key][(c["protocol"], c["dataset"])].append(r)
            self.presets[key] = c["preset"]
        self.notes: list[str] = []

    def rows(self, wanted: list[tuple[str, str]] | None = None) -> list[RowKey]:
        keys = sorted(self.cells, key=row_order)
        if wanted is None:
            return keys
        return [k for mv in wanted for k in keys if k[:2] == mv]

    def label(self, key: RowKey, rows: list[RowKey]) -> str:
        """Method [variant]; with preset and setting hash when the table has other settings of it."""
        method, variant, setting = key
        name = method if variant == "default" else f"{method} [{variant}]"
        clashes = sum(1 for k in rows if k[:2] == key[:2])
        return name if clashes == 1 else f"{name} ({self.presets[key]}, {setting})"

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
            method, variant, setting = key
            self.notes.append(
                f"{method} [{variant}] ({setting}) {protocol}/{dataset}: {len(records) - len(keep)} result(s) with other protocol settings not shown"
            )
            return keep
        return records


def pct(values: list[float]) -> str:
    a = 100 * np.asarray(values)
    return f"{a.mean():.2f}" if len(a) == 1 else f"{a.mean():.2f}±{a.std(ddof=1):.2f}"


def fer_cell(records: list[dict]) -> str:
    if not records:
        return ""
    acc = [r["metrics"]["accuracy"] for r in records]
    f1 = [r["metrics"]["macro_f1"] for r in records]
    return f"{pct(acc)} / {pct(f1)} (n={len(records)})"


def verification_cell(records: list[dict]) -> str:
    if not records:
        return ""
    acc = 100 * np.array([r["metrics"]["accuracy"] for r in records])
    fold_sd = 100 * np.mean([r["metrics"]["accuracy_std"] for r in records])
    seeds = f", seed sd {acc.std(ddof=1):.2f}" if len(acc) > 1 else ""
    return f"{acc.mean():.2f}±{fold_sd:.2f} (n={len(acc)}{seeds})"


def paper_cell(numbers: dict | None, dataset: str, protocol: str) -> str:
    if not numbers or dataset not in numbers:
        return ""
    a, b = numbers[dataset]
    return f"{a:.2f} / {b:.2f}" if protocol == "fer" else f"{a:.2f}±{b:.2f}"


def make_table(grid: Grid, rows: list[RowKey], protocols: list[str], paper: dict) -> str:
    headers, getters = ["Method"], []
    for protocol in protocols:
        for dataset in grid.columns(protocol, rows):
            metric = "acc / F1" if protocol == "fer" else "acc"
            if len(protocols) > 1:
                metric = f"{'FER' if protocol == 'fer' else 'verification'} {metric}"
            fmt = fer_cell if protocol == "fer" else verification_cell
            headers.append(f"{dataset} {metric}")
            getters.append(lambda k, p=protocol, d=dataset, f=fmt: f(grid.records(k, p, d)))
            if any(dataset in paper.get(k[:2], {}) for k in rows):
                headers.append(f"{dataset} paper")
                getters.append(lambda k, p=protocol, d=dataset: paper_cell(paper.get(k[:2]), d, p))
    body = [[grid.label(k, rows)] + [g(k) for g in getters] for k in rows]
    return tabulate(body, headers=headers, tablefmt="github")


def footer(records: list[dict], notes: list[str]) -> str:
    shas = sorted({r["provenance"]["git"]["sha"][:10] + ("+dirty" if r["provenance"]["git"].get("dirty") else "") for r in records})
    versions = ", ".join(f"{name} v{PROTOCOLS.get(name).version}" for name in PROTOCOLS.names())
    lines = [
        "",
        "Percent; mean over seeds, n = number of seeds. Verification: ± is the spread over the 10 folds (sd, ddof 1).",
        f"Code versions (git): {', '.join(shas)}. Protocols: {versions}.",
    ]
    lines += [f"Note: {n}" for n in sorted(set(notes))]
    lines.append(f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.")
    return "\n".join(lines) + "\n"


TITLES = {
    "table1_fer": "Table 1: facial expression recognition by linear probing (accuracy / macro F1)",
    "table2_verification": "Table 2: face verification, 10-fold accuracy",
    "table3_pixel_ablation": "Table 3: ablation of pixel-space disentangling (stage 1)",
    "table4_rdm_ablation": "Table 4: ablation of latent-space disentangling (stage 2)",
}


def generate(results_dir: Path) -> dict[str, str]:
    """Write every table (markdown) and confusion figure; returns {table name: markdown}."""
    load_plugins()
    results_dir = Path(results_dir)
    records = load_results(results_dir)
    grid = Grid(records)
    tables: dict[str, str] = {}
    for name, protocol in (("table1_fer", "fer"), ("table2_verification", "verification")):
        rows = [k for k in grid.rows() if any(p == protocol for p, _ in grid.cells[k])]
        if rows:
            tables[name] = make_table(grid, rows, [protocol], MAIN)
    for ablation, name in (("pixel", "table3_pixel_ablation"), ("rdm", "table4_rdm_ablation")):
        rows = grid.rows(ABLATIONS.get(ablation, []))
        if len(rows) > 1:  # an ablation needs something to compare with
            tables[name] = make_table(grid, rows, ["fer", "verification"], ABLATION_NUMBERS[ablation])
    out = {}
    for name, body in tables.items():
        text = f"# {TITLES[name]}\n\n{body}\n{footer(records, grid.notes)}"
        with atomic_path(results_dir / "tables" / f"{name}.md") as tmp:
            tmp.write_text(text)
        out[name] = text
    write_confusion_figures(records, results_dir / "figures")
    return out


def write_confusion_figures(records: list[dict], folder: Path) -> list[Path]:
    """One PNG per FER result, normalised by true class; skipped when already newer than its JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for r in records:
        if r["cell"]["protocol"] != "fer":
            continue
        src = Path(r["_path"])
        png = folder / r["cell"]["dataset"] / (src.stem + ".png")
        if png.exists() and png.stat().st_mtime >= src.stat().st_mtime:
            continue
        cm = np.asarray(r["metrics"]["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        names = r["metrics"]["class_names"]
        fig, ax = plt.subplots(figsize=(5.5, 4.8))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
        c = r["cell"]
        ax.set_title(f"{c['method']} [{c['variant']}] on {c['dataset']}, seed {c['seed']}\naccuracy {100 * r['metrics']['accuracy']:.1f}%", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        written.append(png)
    return written
