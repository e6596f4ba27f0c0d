"""Progress bars that show on a terminal and stay quiet in logs and CI."""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress(**kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, disabled when stderr is not a terminal (Slurm logs, CI, pipes)."""
    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(file=sys.stderr, **kwargs)
