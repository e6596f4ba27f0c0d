"""Markdown tables and figures regenerated from the result files of one store (never edited by hand).

A *store* is a results folder: result files under ``<protocol>/<dataset>/``, and the ``tables/``
and ``figures/`` generated from them. Every registered protocol lays out its own tables and
figures (``Protocol.tables``, ``Protocol.figures``); every registered ablation gets one table over
the protocols its rows were evaluated with. This module indexes the results -- rows are method
variants (split by setting only where a method was run with different settings), columns are
(protocol, dataset) -- draws a grouped bar chart of every table laid out by ``Grid.table``, and
embeds each table's figures in its markdown, so a store reads well on GitHub.
"""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

from tabulate import tabulate

from harness import compare, plots
from harness.config import config_hash
from harness.errors import BenchError
from harness.io import atomic_path
from harness.registry import ABLATIONS, METHODS, PROTOCOLS, Ablation, load_plugins

RowKey = tuple[str, str, str]  # method, variant, method-setting hash
Column = tuple[type, str]  # protocol class, dataset
BAR_CAPTION = (
    "*Bars: each protocol's main metric x 100, mean over seeds; error bars: its 95 % interval (the sd over seeds "
    "where results have no per-item outcomes; none for one such seed); dashed lines: the sanity floors; black diamonds: "
    "the paper's numbers.*"
)


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
    setting = {"preset": cfg["preset"], "method": cfg["method"]["config"], "pretrain": cfg.get("pretrain")}
    if "train" in cfg:  # trained with bf16 / TF32 (absent on the plain float32 path)
        setting["train"] = cfg["train"]
    if "weights" in cfg:  # loaded from a file (a release, an outside encoder): the file is the model
        setting["weights"] = cfg["weights"]["sha256"]
    return setting


def evaluation_setting(record: dict) -> dict:
    """What defines how a result was measured: the protocol's settings and the dataset's."""
    return {"protocol": record["config"]["protocol"], "dataset": record["config"]["dataset"]}


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


def label_order(path: str) -> tuple:
    """Which differences a row label names first: preset, method settings, pretraining data, and
    last the fingerprints of the data (a changed dataset under the same name)."""
    groups = ("preset", "method.", "pretrain.config.")
    return next((i for i, g in enumerate(groups) if path.startswith(g)), len(groups)), path


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


def is_floor(key: RowKey) -> bool:
    """Whether a row is a sanity floor (``Method.floor``): figures draw it as a line."""
    return key[0] in METHODS and bool(METHODS.get(key[0]).floor)


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a table laid out by ``Grid.table`` shows: rows, (protocol, dataset) columns, the paper."""

    rows: tuple[RowKey, ...]
    columns: tuple[Column, ...]
    paper: dict


@dataclasses.dataclass
class Table:
    """One generated table: its heading, markdown body and footer, and the layout of its bar
    chart (tables made by ``Grid.table``, and every protocol's main table; else None)."""

    stem: str
    title: str
    body: str
    footer: str
    layout: Optional[Layout] = None

    def markdown(self, figures: Iterable[str] = ()) -> str:
        """The file's text; ``figures`` are image paths relative to the file, embedded below."""
        embeds = ""
        for f in figures:
            embeds += f"\n![{Path(f).stem}]({f})\n"
            if self.layout is not None and Path(f).stem == self.stem:
                embeds += f"\n{BAR_CAPTION}\n"
        return f"# {self.title}\n\n{self.body}\n{self.footer}{embeds}"


class Grid:
    """Results indexed by row (method variant + setting) and column (protocol, dataset)."""

    def __init__(self, records: Iterable[dict]) -> None:
        self.all = list(records)
        self.cells: dict[RowKey, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
        self.settings: dict[RowKey, dict] = {}
        self.weights: dict[RowKey, str] = {}  # the weight file's name, for rows loaded from one
        for r in self.all:
            c = r["cell"]
            setting = method_setting(r)
            key = (c["method"], c["variant"], config_hash(setting))
            self.cells[key][(c["protocol"], c["dataset"])].append(r)
            self.settings[key] = setting
            if "weights" in r["config"]:
                self.weights[key] = Path(r["config"]["weights"]["path"]).name
        self.notes: list[str] = []
        self.layouts: dict[str, Layout] = {}  # markdown body -> the layout that made it
        self.stats = compare.Stats()
        self._columns: dict[tuple, dict] = {}

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
        with several settings; a changed dataset under the same name shows as its fingerprint."""
        method, variant, _ = key
        name = method if variant == "default" else f"{method} [{variant}]"
        weights = self.weights.get(key)
        if weights:  # a model loaded from a file is named with its file
            name += f" <{weights}>"
        clashes = [k for k in self.cells if k[:2] == key[:2]]
        if len(clashes) == 1:
            return name
        flat = {k: flatten(self.settings[k]) for k in clashes}
        paths = {p for f in flat.values() for p in f}
        differ = [p for p in paths if len({json.dumps(f.get(p), sort_keys=True) for f in flat.values()}) > 1]
        # a different pretraining dataset explains every difference in its fingerprint
        named = {p.split(".")[2] for p in differ if p.startswith("pretrain.config.")}
        differ = sorted((p for p in differ if not (p.split(".")[0] == "pretrain" and p.split(".")[1] in named)), key=label_order)
        mine = flat[key]
        shown = [f"{short_key(p)}={mine[p] if p in mine else '-'}" for p in differ[:3]]
        more = f", +{len(differ) - 3} more" if len(differ) > 3 else ""
        return f"{name} ({', '.join(shown)}{more})"

    def columns(self, protocol: str, rows: list[RowKey]) -> list[str]:
        return sorted({d for k in rows for (p, d) in self.cells[k] if p == protocol})

    def records(self, key: RowKey, protocol: str, dataset: str) -> list[dict]:
        """The records of one table cell; where protocol or dataset settings differ, the newest
        setting wins (seeds measured differently are never averaged together)."""
        records = self.cells[key].get((protocol, dataset), [])
        by_setting = defaultdict(list)
        for r in records:
            by_setting[config_hash(evaluation_setting(r))].append(r)
        if len(by_setting) > 1:
            newest = max(records, key=lambda r: r["provenance"]["end_time"])
            keep = by_setting[config_hash(evaluation_setting(newest))]
            self.notes.append(
                f"{self.label(key)} {protocol}/{dataset}: {len(records) - len(keep)} result(s) with other protocol or dataset settings not shown"
            )
            return keep
        return records

    def column_stats(self, protocol: type, dataset: str, rows: Iterable[RowKey]) -> dict[RowKey, dict]:
        """Each row's intervals and marks (``harness.protocol.Shown`` by measure) in the column
        (protocol, dataset) of a table with these rows: the best row and its ties are ranked
        among the table's rows only."""
        memo = (protocol.name, dataset, tuple(rows))
        if memo not in self._columns:
            self._columns[memo] = self.stats.column(protocol, {k: self.records(k, protocol.name, dataset) for k in memo[2]})
        return self._columns[memo]

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
        """The markdown of rows x (protocol, dataset) columns; a paper column follows a dataset
        the paper reports, filled only in rows measured on that dataset. The layout is kept
        (``layouts``) for the table's bar chart."""
        layout = self.layout(rows, protocols, paper)
        headers, getters = ["Method"], []
        for protocol, dataset in layout.columns:
            headers.append(f"{dataset} {protocol.name} {protocol.metric}" if len(protocols) > 1 else f"{dataset} {protocol.metric}")
            getters.append(lambda k, p=protocol, d=dataset: p.cell(self.records(k, p.name, d), self.column_stats(p, d, rows)[k]))
            if any(self.paper_number(paper, k, protocol, dataset) for k in rows):
                headers.append(f"{dataset} paper")
                getters.append(lambda k, p=protocol, d=dataset: p.paper_cell(n) if (n := self.paper_number(paper, k, p, d)) else "")
        body = [[self.label(k)] + [g(k) for g in getters] for k in rows]
        markdown = tabulate(body, headers=headers, tablefmt="github")
        self.layouts[markdown] = layout
        return markdown

    def layout(self, rows: list[RowKey], protocols: list[type], paper: dict) -> Layout:
        """Rows x the (protocol, dataset) columns they have results in."""
        return Layout(tuple(rows), tuple((p, d) for p in protocols for d in self.columns(p.name, rows)), paper)

    def paper_number(self, paper: dict, key: RowKey, protocol: type, dataset: str) -> Optional[tuple[float, float]]:
        """The paper's number for a row on a dataset, where the row has results to compare."""
        return paper.get(key[:2], {}).get(dataset) if self.cells[key].get((protocol.name, dataset)) else None

    def ablation_table(self, ablation: Ablation) -> str:
        """The ablation's rows over every protocol they were evaluated with ('' for fewer than two rows)."""
        rows = self.rows(ablation.rows)
        if len(rows) < 2:  # an ablation needs something to compare with
            return ""
        protocols = [PROTOCOLS.get(p) for p in PROTOCOLS.names() if self.columns(p, rows)]
        return self.table(rows, protocols, ablation.paper)

    # --- figures ------------------------------------------------------------------------------
    def bars(self, layout: Layout, title: str) -> plots.Bars:
        """The bar chart of a table: each row's ``Protocol.main_metric`` in percent, mean over
        seeds and its interval per column; floors as lines; the paper's first number as a marker."""
        many = len({p for p, _ in layout.columns}) > 1
        groups = [f"{d} {p.name}" if many else d for p, d in layout.columns]
        series: dict[str, list] = {}
        floors: dict[str, list] = {}
        paper: dict[str, list] = {}
        scored: dict[str, list[list[float]]] = {}  # the floors results score themselves (Protocol.floors)
        for key in layout.rows:
            stats = []
            for g, (protocol, dataset) in enumerate(layout.columns):
                records = self.records(key, protocol.name, dataset)
                main = self.column_stats(protocol, dataset, layout.rows)[key].get(protocol.main_measure(records[0]["metrics"])) if records else None
                interval = (100 * main.estimate.low, 100 * main.estimate.high) if main and main.estimate else None
                stats.append(plots.stat([100 * protocol.main_metric(r["metrics"]) for r in records], interval))
                for r in records:
                    for name, value in protocol.floors(r["metrics"]).items():
                        scored.setdefault(name, [[] for _ in layout.columns])[g].append(100 * value)
            label = self.label(key)
            (floors if is_floor(key) else series)[label] = stats
            numbers = [self.paper_number(layout.paper, key, p, d) for p, d in layout.columns]
            if any(numbers):
                paper[label] = [n[0] if n else None for n in numbers]
        floors.update({name: [plots.stat(v) for v in columns] for name, columns in scored.items()})
        metrics = sorted({p.metric.split(" / ")[0] for p, _ in layout.columns})  # the main metric comes first
        return plots.Bars(title=title, ylabel=" / ".join(metrics), groups=groups, series=series, floors=floors, paper=paper)


def footer(records: list[dict], notes: list[str]) -> str:
    """Units, code and protocol versions, notes; deterministic, so a table regenerates byte for byte."""
    shas = sorted({r["provenance"]["git"]["sha"][:10] + ("+dirty" if r["provenance"]["git"].get("dirty") else "") for r in records})
    protocols = sorted({r["cell"]["protocol"] for r in records})
    versions = ", ".join(sorted({f"{r['cell']['protocol']} v{r['config']['protocol']['version']}" for r in records}))
    lines = ["", "Percent; mean over seeds, n = number of seeds; ± is the sd over seeds unless said otherwise."]
    lines += [PROTOCOLS.get(p).note for p in protocols if p in PROTOCOLS and PROTOCOLS.get(p).note]
    lines += compare.footer_lines([PROTOCOLS.get(p) for p in protocols if p in PROTOCOLS], records)
    lines.append(f"Code versions (git): {', '.join(shas)}. Protocols: {versions}.")
    lines += [f"Note: {n}" for n in sorted(set(notes))]
    newest = max((r["provenance"]["end_time"] for r in records), default="")
    lines.append(f"Regenerated from {len(records)} result files, the newest finished {newest[:16].replace('T', ' ')} UTC.")
    return "\n".join(lines) + "\n"


def build_tables(records: list[dict]) -> tuple[Grid, dict[str, Table]]:
    """The grid of ``records`` and every table, by file stem (nothing written)."""
    load_plugins()
    grid = Grid(records)
    bodies: dict[str, tuple[str, str]] = {}
    sources: dict[str, list[dict]] = {}  # the records each table shows, for its footer
    for name in PROTOCOLS.names():
        if grid.records_of(name):
            made = PROTOCOLS.get(name).tables(grid)
            bodies.update(made)
            sources.update({stem: grid.records_of(name) for stem in made})
    for ablation in ABLATIONS.values():
        body = grid.ablation_table(ablation)
        if body:
            bodies[ablation.table] = (ablation.title, body)
            rows = set(ablation.rows)
            sources[ablation.table] = [r for r in records if (r["cell"]["method"], r["cell"]["variant"]) in rows]
    # a protocol's main table laid out its own way still gets the bar chart of its main metric
    main = {cls.table[0]: cls for cls in map(PROTOCOLS.get, PROTOCOLS.names())}
    layouts = {
        stem: grid.layouts.get(body) or (grid.layout(grid.rows(protocols=[main[stem].name]), [main[stem]], main[stem].paper) if stem in main else None)
        for stem, (_, body) in bodies.items()
    }
    return grid, {
        stem: Table(stem, title, body, footer(sources[stem], grid.notes), layouts[stem]) for stem, (title, body) in bodies.items()
    }


def table_figures(folder: Path, stem: str) -> list[Path]:
    """The figures embedded in table ``stem``: ``<stem>.png`` (its bar chart) first, then
    ``<stem>-*.png`` in ``folder`` (a protocol names its own figures so to have them shown under
    its table)."""
    return sorted((p for p in folder.glob(f"{stem}*.png") if p.stem == stem or p.stem.startswith(f"{stem}-")),
                  key=lambda p: (p.stem != stem, p.name))


def generate(results_dir: Path) -> dict[str, Table]:
    """Write every figure and table (markdown, figures embedded) of a store; returns the tables."""
    results_dir = Path(results_dir)
    figures = results_dir / "figures"
    records = load_results(results_dir)
    grid, tables = build_tables(records)
    written = set()
    for stem, table in tables.items():
        if table.layout is not None:
            written.add(plots.bar_chart(grid.bars(table.layout, table.title), figures / f"{stem}.png"))
    for name in PROTOCOLS.names():
        if grid.records_of(name):
            written.update(PROTOCOLS.get(name).figures(grid, figures))
    remove_stale(results_dir, written, set(tables), {Path(r["_path"]).stem for r in records})
    for stem, table in tables.items():
        with atomic_path(results_dir / "tables" / f"{stem}.md") as tmp:
            tmp.write_text(table.markdown(f"../figures/{p.name}" for p in table_figures(figures, stem)))
    return tables


def remove_stale(results_dir: Path, written: set[Path], stems: set[str], results: set[str]) -> None:
    """Delete what this generation no longer makes, so that no table embeds an old figure: tables
    and top-level figures not written now, and per-result figures (``<dataset>/<result>[-kind].png``)
    whose result file is gone (superseded or deleted)."""
    for md in (results_dir / "tables").glob("*.md"):
        if md.stem not in stems:
            md.unlink()
    names = {Path(p).name for p in written}
    for png in (results_dir / "figures").glob("*.png"):
        if png.name not in names:
            png.unlink()
    for png in (results_dir / "figures").glob("*/*.png"):
        if png.stem not in results and png.stem.rsplit("-", 1)[0] not in results:
            png.unlink()
