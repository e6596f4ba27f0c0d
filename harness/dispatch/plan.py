"""The plan of a sweep: its cells, the artifacts they need and the levels those are built in."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from harness.artifacts import Artifact
from harness.config import config_hash
from harness.errors import BenchError
from harness.session import Cell, Session, Settings, session_for


def artifact_id(artifact: Artifact) -> str:
    """``kind/hash``: the artifact's folder under ``<cache>/artifacts`` and its name in logs."""
    return f"{artifact.kind}/{artifact.hash}"


@dataclasses.dataclass
class Node:
    """One unique artifact of a sweep.

    Attributes:
        artifact: what is built (its ``build`` closure belongs to ``maker``'s method).
        level: 0 if it needs no other artifact, else 1 + the highest level of those it needs.
        maker: a cell whose method lists the artifact: a training job rebuilds the method from it.
        cells: every cell to run that needs the artifact.
        built: whether ``done.json`` exists.
    """

    artifact: Artifact
    level: int
    maker: Cell
    cells: list[Cell]
    built: bool

    @property
    def id(self) -> str:
        return artifact_id(self.artifact)


@dataclasses.dataclass
class Plan:
    """A sweep: every cell the arguments name, the ones to run, and the artifacts those need.

    Attributes:
        sweep: id of the sweep (``<preset>-<hash of settings and cells>``).
        settings: the settings, with absolute paths (jobs may start in another directory).
        cells: every cell of the sweep, done or not.
        todo: the cells to run.
        nodes: artifacts the todo cells need, by id, dependencies first.
        needs: artifact ids each todo cell needs.
        results: result file of every cell.
    """

    sweep: str
    settings: Settings
    cells: list[Cell]
    todo: list[Cell]
    nodes: dict[str, Node]
    needs: dict[Cell, list[str]]
    results: dict[Cell, Path]

    @property
    def folder(self) -> Path:
        """Job logs, pickles and the manifest of this sweep."""
        return Path(self.settings.cache_dir) / "slurm-logs" / self.sweep

    def levels(self) -> list[list[Node]]:
        """Unbuilt artifacts by dependency level: level k needs only artifacts of levels below k."""
        todo = [n for n in self.nodes.values() if not n.built]
        return [[n for n in todo if n.level == k] for k in range(max((n.level for n in todo), default=-1) + 1)]

    def key(self, item: Cell | Node) -> str:
        """Name of a job in the manifest: ``artifact <kind/hash>`` or ``cell <protocol/dataset/file>``."""
        if isinstance(item, Node):
            return f"artifact {item.id}"
        return f"cell {item.protocol}/{item.dataset}/{self.results[item].name}"


def absolute(settings: Settings) -> Settings:
    """``settings`` with absolute paths, as jobs get them."""
    root = str(Path(settings.data_root).expanduser().resolve()) if settings.data_root else None
    return dataclasses.replace(
        settings,
        data_root=root,
        results_dir=str(Path(settings.results_dir).resolve()),
        cache_dir=str(Path(settings.cache_dir).resolve()),
        dump_features=str(Path(settings.dump_features).resolve()) if settings.dump_features else None,
    )


def make_plan(todo: Sequence[Cell], settings: Settings, cells: Optional[Sequence[Cell]] = None) -> Plan:
    """The artifact graph of ``todo`` (nothing is trained: methods only list their artifacts).

    Args:
        todo: cells to run.
        settings: settings of the invocation.
        cells: every cell of the sweep (names it, so a rerun finds the same sweep); default ``todo``.
    """
    # The caller's session: within a command's ``planning`` block it knows every cell's identity
    # already, and identities do not depend on how the paths are written.
    session = session_for(settings)
    with session.planning():
        return _make_plan(session, list(todo), list(cells if cells is not None else todo))


def _make_plan(session: Session, todo: list[Cell], cells: list[Cell]) -> Plan:
    settings = absolute(session.settings)
    cache = Path(settings.cache_dir)
    nodes: dict[str, Node] = {}
    deps: dict[str, set[str]] = {}
    needs: dict[Cell, list[str]] = {}
    for cell in todo:
        artifacts = session.artifacts(cell.method, cell.variant, cell.seed)
        ids = needs[cell] = [artifact_id(a) for a in artifacts]
        for i, artifact in enumerate(artifacts):
            if ids[i] not in nodes:
                nodes[ids[i]] = Node(artifact, 0, cell, [], artifact.is_built(cache))
            nodes[ids[i]].cells.append(cell)
            deps.setdefault(ids[i], set()).update(ids[:i])  # methods list dependencies first

    def level(aid: str, path: tuple[str, ...] = ()) -> int:
        if aid in path:
            raise BenchError(f"artifacts need each other in a cycle: {' -> '.join((*path, aid))}")
        return max((level(d, (*path, aid)) + 1 for d in deps[aid]), default=0)

    for aid, node in nodes.items():
        node.level = level(aid)
    sweep = f"{settings.preset}-" + config_hash(
        {"settings": dataclasses.asdict(settings), "cells": [dataclasses.asdict(c) for c in sorted(cells)]}
    )
    return Plan(
        sweep=sweep,
        settings=settings,
        cells=cells,
        todo=todo,
        nodes=dict(sorted(nodes.items(), key=lambda item: item[1].level)),
        needs=needs,
        results={cell: Path(settings.results_dir) / session.result_path(cell).relative_to(session.settings.results_dir) for cell in cells},
    )
