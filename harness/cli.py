"""Command line of the benchmark (``python run_bench.py --help``)."""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import sys
import time
from typing import TYPE_CHECKING
from pathlib import Path

import torch

from harness.checks import check_run, known_sections
from harness import timing
from harness.config import PRESETS, check_sections, load_config_file, parse_overrides
from harness.errors import BenchError
from harness.io import UNWRITABLE, clean_temporary, make_dirs
from harness.locks import file_lock
from harness.progress import DEFAULT_INTERVAL, INTERVAL_ENV
from harness.registry import ABLATIONS, DATASETS, METHODS, PROTOCOLS, SUITES, load_plugins
from harness.runner import missing_dump, store_locks
from harness.session import Cell, Session, Settings, session_for
from harness.trainlog import BACKENDS, LOG_ENV, check_backends

DEFAULT_STORE = "results/runs"  # where runs write unless --results-dir says otherwise
REFERENCE_STORE = "results/reference"  # the committed reference results on real faces

if TYPE_CHECKING:  # the tables module is imported when it is needed
    from harness.tables import Table

EXAMPLES = f"""
examples:
  python run_bench.py                                  # every method, both protocols, synthetic data, quick preset
  python run_bench.py --methods latentface,mae --protocol fer
  python run_bench.py --ablation rdm                   # the paper's Table 4 rows
  python run_bench.py --methods pixels --protocol verification --datasets lfw --data-root ~/data
  python run_bench.py --methods latentface:rdm-shape --set fer.epochs=5 --seeds 0,1,2
  python run_bench.py --config configs/released.toml --set latentface.checkpoint=diffusion_64.pth --methods latentface --datasets lfw
  python run_bench.py --methods timm:resnet50 --set timm.weights=resnet50.pth --dump-features feats/
  python run_bench.py --log tensorboard                # also TensorBoard event files beside each checkpoint
  python run_bench.py --tables-only                    # regenerate tables and figures of {DEFAULT_STORE}/
  python run_bench.py --tables-only --results-dir {REFERENCE_STORE}
  python run_bench.py --export results.csv             # every result of the store as one tidy table
  python run_bench.py --compare unsup3d,latentface:rdm-both --results-dir {REFERENCE_STORE}   # intervals, paired tests

stores: a results folder holds result files, tables/ and figures/. Runs write to {DEFAULT_STORE}/ unless
--results-dir says otherwise; the committed reference results on real faces are {REFERENCE_STORE}/.
At the end of a run the tables of that run's cells are printed; the store's files cover all its results.

logs: off a terminal (Slurm, nohup, CI) long work prints a progress line every
${INTERVAL_ENV} seconds (default {DEFAULT_INTERVAL:g}), and each cell its summary when it finishes.
Every trained model keeps its losses (losses_step.csv, losses_epoch.csv, losses.png) beside its checkpoint.
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line (exit 2) like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="run_bench.py",
        description="Self-supervised facial representation benchmark: train methods, extract frozen features, "
        "evaluate them by linear-probe expression recognition and 10-fold verification, and regenerate the "
        "paper's tables from the stored results. Finished cells are skipped on rerun.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to run")
    what.add_argument("--methods", help="comma-separated methods, optionally method:variant (default: every method)")
    what.add_argument("--ablation", help="run the method variants of a paper ablation table: rdm (Table 4) or pixel (Table 3)")
    what.add_argument("--protocol", default="all", help="comma-separated protocols, or all: every protocol each dataset and method supports (default; see --list)")
    what.add_argument("--datasets", help="comma-separated datasets or suites (default: synthetic, built in; with --compare: every dataset; verification-suite: every .bin verification set present)")
    what.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    how = p.add_argument_group("how")
    how.add_argument("--preset", default="quick", choices=PRESETS, help="smoke (seconds), quick (minutes on a CPU, default), paper (GPU)")
    how.add_argument("--config", metavar="FILE.toml",
                     help="settings file: [section] tables of key = value, applied before --set (see configs/)")
    how.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a config field, e.g. fer.epochs=5, pretrain.data=lfw, or how training uses the device: "
                     "train.precision=fp32, train.compile=true (repeatable)")
    how.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "data"),
                     help="parent folder of the real datasets (default: $BENCH_DATA_ROOT, else ./data)")
    how.add_argument("--results-dir", default=DEFAULT_STORE,
                     help=f"the store: result files, tables and figures (default: {DEFAULT_STORE}/; "
                     f"the reference results are {REFERENCE_STORE}/)")
    how.add_argument("--cache-dir", default=os.environ.get("BENCH_CACHE_DIR", ".cache"),
                     help="decoded data, checkpoints and features (default: $BENCH_CACHE_DIR, else .cache)")
    how.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    how.add_argument("--executor", default="inline", choices=("inline", "local", "slurm"),
                     help="inline: this process; local: submitit local processes; slurm: Slurm job arrays")
    how.add_argument("--slurm-profile", default="local-test", metavar="NAME",
                     help="cluster settings for --executor local/slurm: slurm/profiles/NAME.toml or a .toml path "
                     "(default: local-test)")
    how.add_argument("--slurm", dest="slurm_overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a profile key, e.g. partition=gpu, timeout_min=120, "
                     "additional_parameters.exclude=node17 (repeatable; KEY= unsets it)")
    how.add_argument("--plugins", default=os.environ.get("BENCH_PLUGINS", ""), metavar="MODULES",
                     help="comma-separated modules to import here and in every job, to register your own datasets "
                     "or methods (default: $BENCH_PLUGINS)")
    how.add_argument("--detach", action="store_true",
                     help="with --executor slurm: submit and return without waiting; follow with --status")
    how.add_argument("--rerun", action="store_true", help="recompute cells that already have a result file")
    how.add_argument("--log", default=os.environ.get(LOG_ENV, ""), metavar="LOGGERS",
                     help=f"also log training to: {', '.join(BACKENDS)} (comma-separated; optional extras of the same "
                     f"name; WANDB_MODE=offline works without a network). Default: ${LOG_ENV}, else only the CSV "
                     "and PNG of the losses beside each checkpoint")
    how.add_argument("--dump-features", metavar="DIR",
                     help="also write the features each cell evaluated, one .npz per split (features, names, "
                     "labels/identities, the cell) under DIR/<protocol>/<dataset>/<cell>/; finished cells without "
                     "a dump are evaluated again from the feature cache")
    modes = p.add_argument_group("other modes")
    modes.add_argument("--dry-run", action="store_true",
                       help="print the artifact graph, the cells (and whether they are done) and the jobs, then exit")
    modes.add_argument("--status", action="store_true",
                       help="print which cells of this sweep are done, running, failed (with the log) or missing")
    modes.add_argument("--list", action="store_true", help="list registered methods, variants, protocols, datasets, ablations")
    modes.add_argument("--tables-only", action="store_true", help="only regenerate the store's tables and figures from its result files")
    modes.add_argument("--export", metavar="FILE", help="write every result of the store as one table (.csv, or .parquet "
                       "with pyarrow): cell, config hash, metrics, seed, git sha, wall time; then exit")
    modes.add_argument("--compare", metavar="A,B", help="compare two methods (method or method:variant) in the store: per "
                       "protocol, dataset and number, each value with its 95 %% interval, the difference with its interval, "
                       "the paired test's p-value and the smallest difference detectable at 80 %% power (docs/statistics.md)")
    return p


def merge_overrides(base: dict[str, dict[str, str]], top: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Section-wise merge; ``top`` (the command line) wins."""
    return {s: {**base.get(s, {}), **top.get(s, {})} for s in sorted(set(base) | set(top))}


def split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def method_variants(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.ablation and args.methods:
        raise BenchError("--ablation and --methods both choose methods; give only one of them")
    if args.ablation:
        if args.ablation not in ABLATIONS:
            raise BenchError(f"unknown ablation {args.ablation!r}; known ablations: {', '.join(ABLATIONS)}")
        return list(ABLATIONS[args.ablation].rows)
    names = split(args.methods) if args.methods else [n for n in METHODS.names() if METHODS.get(n).in_default_run]
    out = []
    for item in names:
        name, _, variant = item.partition(":")
        out.append((name, variant or METHODS.get(name).variants[0]))
    return out


def expand_suites(names: list[str], session: Session) -> list[str]:
    """``names`` with each dataset suite replaced by its members that are present; one line per
    member skipped, an error when none is present."""
    out: list[str] = []
    for name in names:
        if name not in SUITES:
            out.append(name)
            continue
        present = []
        for member in SUITES[name]:
            why = session.dataset(member).missing()
            if why:
                print(f"{name}: skipping {member} ({why})")
            else:
                present.append(member)
        if not present:
            raise BenchError(
                f"{name}: none of its datasets ({', '.join(SUITES[name])}) is present; put their files under "
                f"--data-root or point --set {name}.folder=DIR at them"
            )
        out += [m for m in present if m not in out]
    return out


def plan(args: argparse.Namespace, datasets: list[str] | None = None) -> list[Cell]:
    """The cells to run, in a stable order; fails on unknown names or impossible combinations.
    ``datasets``: the names to use instead of ``--datasets`` (its suites expanded)."""
    mvs = method_variants(args)
    protocols = PROTOCOLS.names() if args.protocol == "all" else split(args.protocol)
    datasets = split(args.datasets or "synthetic") if datasets is None else datasets
    try:
        seeds = [int(s) for s in split(args.seeds)]
        if any(s < 0 for s in seeds):
            raise ValueError
    except ValueError:
        raise BenchError(f"--seeds {args.seeds!r}: expected comma-separated non-negative integers like 0,1,2") from None
    for name in protocols:
        PROTOCOLS.get(name)
    for name in datasets:
        DATASETS.get(name)
    if not (mvs and protocols and datasets and seeds):
        raise BenchError("nothing to run: --methods, --protocol, --datasets and --seeds must each name at least one item")
    pairs = [(p, d) for p in protocols for d in datasets if PROTOCOLS.get(p).task in DATASETS.get(d).tasks]
    explicit = args.protocol != "all"
    for d in datasets:
        usable = [p for p in protocols if (p, d) in pairs]
        if not usable or explicit and len(usable) < len(protocols):
            missing = [p for p in protocols if (p, d) not in pairs]
            raise BenchError(
                f"dataset {d!r} cannot be used with protocol {', '.join(missing)} "
                f"(it supports: {', '.join(sorted(DATASETS.get(d).tasks))}); pick another --datasets or --protocol"
            )
    for name, _ in mvs:
        unsupported = [p for p in protocols if not PROTOCOLS.get(p).supports(METHODS.get(name))]
        if explicit and unsupported:
            raise BenchError(f"protocol {', '.join(unsupported)} cannot evaluate method {name!r}; pick other --methods or --protocol")
    return [
        Cell(m, v, p, d, s)
        for (m, v), (p, d), s in itertools.product(mvs, pairs, seeds)
        if PROTOCOLS.get(p).supports(METHODS.get(m))
    ]


def print_listing() -> None:
    print("methods (variants; first is the default):")
    for name in METHODS.names():
        print(f"  {name:12s} {', '.join(METHODS.get(name).variants)}")
    print("protocols:", ", ".join(PROTOCOLS.names()))
    print("datasets:")
    for name in DATASETS.names():
        print(f"  {name:18s} {', '.join(sorted(DATASETS.get(name).tasks))}")
    print("dataset suites (--datasets NAME: every member that is present):")
    for name, members in SUITES.items():
        print(f"  {name:18s} {', '.join(members)}")
    print("ablations:")
    for name, ablation in ABLATIONS.items():
        print(f"  {name:6s} " + ", ".join(f"{m}:{v}" for m, v in ablation.rows))


#: our own packages: an import error inside them is a bug, anywhere else a missing package
OWN_PACKAGES = ("harness", "methods", "protocols", "tests")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the one boundary where every error a user can cause becomes one
    ``error:`` line and exit code 2. Only bugs end in a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted; finished cells and checkpoints are kept, rerun to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a folder or disk that cannot be written, wherever it surfaced
        if exc.errno not in UNWRITABLE:
            raise
        return fail(f"cannot write {exc.filename or 'a file'} ({exc.strerror}); free some space or choose another --results-dir / --cache-dir")
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.split(".")[0] in OWN_PACKAGES:
            raise
        return fail(f"the package {exc.name!r} is not installed; pip install -e . (or the extra that provides it)")
    except torch.OutOfMemoryError:
        return fail(f"out of memory on {args.device}; lower the batch sizes (--set SECTION.batch_size=...) or use a larger device")


def fail(message: str) -> int:
    """Print one ``error:`` line (whatever the message holds) and return exit code 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from harness import dispatch

    load_plugins(split(args.plugins))
    from harness import tables

    # What the imports made lives until the process ends: the garbage collector need not walk it
    # again (a full collection walks torch's objects, ~0.05 s, several times while planning).
    # Once per process: a later call (tests call main many times) would keep its garbage forever.
    if not gc.get_freeze_count():
        gc.freeze()
    if args.list:
        print_listing()
        return 0
    store = Path(args.results_dir)
    if args.tables_only or args.export or args.compare:
        if sum(map(bool, (args.dry_run, args.tables_only, args.export, args.compare))) > 1:
            raise BenchError("--tables-only, --export, --compare and --dry-run are separate modes; give one of them")
        if args.compare:
            return compare_rows(args, store)
        if args.export:
            from harness.export import export

            table = export(tables.load_results(store), Path(args.export))
            print(f"{args.export}: {len(table)} results x {len(table.columns)} columns from {store}/")
            return 0
        return show_tables(write_tables(args), store)
    logs = split(args.log)
    check_backends(logs)
    os.environ[LOG_ENV] = ",".join(logs)  # read by every training loop, here and in submitted jobs
    settings = settings_of(args)
    session = session_for(settings)
    options = dispatch.Options(
        profile=args.slurm_profile, slurm=tuple(args.slurm_overrides), plugins=tuple(split(args.plugins)), detach=args.detach
    )
    with session.planning():  # ends before any cell runs: a run makes its own methods
        cells = plan(args, expand_suites(split(args.datasets or "synthetic"), session))
        check_run(session, cells)  # every setting, name, path and the data sizes, before any work
        paths = {cell: session.result_path(cell) for cell in cells}
        todo = [c for c in cells if args.rerun or not paths[c].exists() or missing_dump(settings, paths[c])]
        if args.status:
            print(dispatch.status(todo, settings, cells))
            return 0
        if args.dry_run:
            print(dispatch.describe(todo, settings, args.executor, options, cells))
            return 0
    for path in clean_temporary(Path(args.results_dir), Path(args.cache_dir)):
        print(f"removed {path}, left by a killed writer")
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run (preset {args.preset})")
    tic = time.time()
    dispatch.dispatch(todo, settings, args.executor, options, cells)
    if args.detach:
        print("submitted; follow the sweep with the same arguments and --status")
        return 0
    print(f"finished in {time.time() - tic:.1f} s; this run's cells:")
    records = []
    for cell in cells:
        records.append({**json.loads(paths[cell].read_text()), "_path": str(paths[cell])})
        print(f"  {cell.label}: {PROTOCOLS.get(cell.protocol).summary(records[-1]['metrics'])}")
    with timing.stage("tables and figures"):
        write_tables(args)  # the store's files cover all its results; the printout only this run's
    _, run_tables = tables.build_tables(sorted(records, key=lambda r: r["_path"]))
    show_tables(run_tables, store, f"Tables of this run's {len(cells)} cell{'s' if len(cells) != 1 else ''}")
    if args.executor == "inline":  # jobs of the other executors ran in other processes
        print("\n" + timing.report(time.time() - tic))
    return 0


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings the command line asks for (``--set`` over ``--config``), every section checked."""
    from_file = load_config_file(args.config) if args.config else {}
    from_set = parse_overrides(args.overrides)
    sections = known_sections()
    check_sections(from_file, sections, f"--config {args.config}")
    check_sections(from_set, sections, "--set")
    return Settings(
        preset=args.preset,
        overrides=merge_overrides(from_file, from_set),
        data_root=args.data_root,
        results_dir=args.results_dir,
        cache_dir=args.cache_dir,
        device=args.device,
        dump_features=args.dump_features,
    )


def compare_rows(args: argparse.Namespace, store: Path) -> int:
    """``--compare a,b``: print the comparison of two methods' results in the store."""
    from harness import compare, tables

    specs = split(args.compare)
    if len(specs) != 2:
        raise BenchError(f"--compare {args.compare!r}: expected two methods, a,b (each method or method:variant)")
    grid = tables.Grid(tables.load_results(store))
    rows = tuple(compare_row(grid, spec, store) for spec in specs)
    protocols = [PROTOCOLS.get(p) for p in (PROTOCOLS.names() if args.protocol == "all" else split(args.protocol))]
    datasets = split(args.datasets) if args.datasets else None
    lines = compare.report(grid, rows, protocols, datasets)
    if not lines:
        where = f" on {args.datasets}" if datasets else ""
        raise BenchError(f"{specs[0]} and {specs[1]} have no results of the same protocol and dataset{where} in {store}/; "
                         "run both on the same protocol and dataset first")
    print("\n".join(lines))
    return 0


def compare_row(grid, spec: str, store: Path):
    """The table row of ``method[:variant]`` (the method's first variant by default) in ``grid``."""
    name, _, variant = spec.partition(":")
    variant = variant or (METHODS.get(name).variants[0] if name in METHODS else "default")
    rows = [k for k in grid.rows() if k[:2] == (name, variant)]
    if not rows:
        have = sorted({f"{m}:{v}" for m, v, _ in grid.rows()})
        raise BenchError(f"--compare: no results of {name}:{variant} in {store}/ (it has: {', '.join(have) or 'none'}); "
                         "run it first or pick the store with --results-dir")
    if len(rows) > 1:
        raise BenchError(f"--compare: {name}:{variant} has results of {len(rows)} settings in {store}/ "
                         f"({'; '.join(grid.label(k) for k in rows)}); compare in a store that holds one of them")
    return rows[0]


def write_tables(args: argparse.Namespace) -> dict[str, "Table"]:
    """Regenerate the store's tables and figures, one process of the store at a time: one deleting
    what its results no longer make while another writes would lose files or fail on a vanished one."""
    from harness import tables

    lock = store_locks(args.results_dir, args.cache_dir) / "tables.lock"
    make_dirs(lock.parent)
    with file_lock(lock, f"the tables of {args.results_dir}"):
        return tables.generate(Path(args.results_dir))


def show_tables(generated: dict[str, "Table"], store: Path, heading: str = "") -> int:
    """Print tables (without their figures) and where the store's files are."""
    if not generated:
        print(f"no result files in {store}/ yet; run some cells first")
        return 0
    if heading:
        print(f"\n{heading}:")
    for table in generated.values():
        print("\n" + table.markdown())
    print(f"tables and figures of all results in {store}/: {store / 'tables'}/, {store / 'figures'}/")
    return 0
