"""Find the repository's ``pipelines/`` and ``components/`` and import a pipeline from them.

Why: components and pipelines live beside the package (one folder per step,
as KFP's own components repo does) and are not installed into site-packages,
so the CLI imports them from the checkout it runs in.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def repo_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` holding both ``pipelines/`` and ``components/``."""
    start = (start or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / "pipelines").is_dir() and (candidate / "components").is_dir():
            return candidate
    raise FileNotFoundError(f"no bettersynth checkout (pipelines/ and components/) at or above {start}")


def load_pipeline_module(name: str = "data_centric_loop", root: Path | None = None) -> ModuleType:
    root = repo_root(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"pipelines.{name}.pipeline")
