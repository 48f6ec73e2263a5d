"""Turn what a user names as a soup ingredient into a local checkpoint directory and its lineage.

Why: users pick ingredients the way they find them: a directory on disk, the
MLflow run that trained it, or a version in the Model Registry. The soup only
reads directories, and its registered version must name the runs it came
from, so each spec resolves to a path *and* the run id behind it.

Accepted specs, tried in this order:

- an existing local directory;
- ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or ``<name>@<alias>``:
  the registered version's ``source``;
- ``runs:/<run_id>/<artifact path>``;
- a bare 32-hex MLflow run id: that run's ``checkpoint`` artifact.

Example::

    ingredients = resolve_ingredients(["ckpts/seed0", "3f2a...c1", "vlm@champion"], tmp / "downloads")
    paths = [i.path for i in ingredients]
    runs = [i.lineage for i in ingredients]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bettersynth.soup.checkpoint import Checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"  # the artifact path under which train/soup steps log a checkpoint
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_RUNS_URI = re.compile(r"^runs:/([0-9a-f]{32})/(.+)$")
_MODELS_VERSION = re.compile(r"^models:/([^/@]+)/(\d+)$")
_MODELS_ALIAS = re.compile(r"^(?:models:/)?([^/@]+)@([^/@]+)$")


@dataclass(frozen=True)
class Ingredient:
    """One resolved ingredient."""

    spec: str  # as the user wrote it
    path: Path  # local checkpoint directory the soup reads
    run_id: str | None = None  # the MLflow run that logged the checkpoint, when known
    model_version: str | None = None  # "<name>/<version>" when given through the Model Registry

    @property
    def lineage(self) -> str:
        """What a soup records for this ingredient: the run id, else the spec."""
        return self.run_id or self.spec


def resolve_ingredients(specs: Sequence[str | Path], download_root: str | Path) -> list[Ingredient]:
    """Resolve every spec; remote checkpoints are downloaded under ``download_root/<i>/``."""
    if not specs:
        raise ValueError("ingredients: need at least one checkpoint")
    return [resolve_ingredient(str(spec), Path(download_root) / str(i)) for i, spec in enumerate(specs)]


def resolve_ingredient(spec: str, download_dir: str | Path) -> Ingredient:
    """Resolve one spec (see the module docstring); raises ValueError naming the spec on failure."""
    from mlflow.exceptions import MlflowException

    if Path(spec).is_dir():
        ingredient = Ingredient(spec, Path(spec))
    else:
        try:
            ingredient = _resolve_remote(spec, Path(download_dir))
        except MlflowException as exc:
            raise ValueError(f"ingredient {spec!r}: {exc.message}") from None
    try:
        Checkpoint.open(ingredient.path)
    except ValueError as exc:
        raise ValueError(f"ingredient {spec!r} is not a safetensors checkpoint: {exc}") from None
    return ingredient


def _resolve_remote(spec: str, download_dir: Path) -> Ingredient:
    from mlflow import MlflowClient

    if match := _MODELS_VERSION.match(spec):
        name, number = match.groups()
        version = MlflowClient().get_model_version(name, number)
        return _from_version(spec, version, download_dir)
    if match := _MODELS_ALIAS.match(spec):
        name, alias = match.groups()
        version = MlflowClient().get_model_version_by_alias(name, alias)
        return _from_version(spec, version, download_dir)
    if match := _RUNS_URI.match(spec):
        run_id = match.group(1)
        return Ingredient(spec, _download(spec, download_dir), run_id=run_id)
    if _RUN_ID.match(spec):
        return Ingredient(spec, _download(f"runs:/{spec}/{CHECKPOINT_ARTIFACT}", download_dir), run_id=spec)
    raise ValueError(
        f"ingredient {spec!r} is neither a local directory, an MLflow run id, runs:/<run>/<path>, "
        "nor a registered model version (models:/<name>/<version>, <name>@<alias>)"
    )


def _from_version(spec: str, version, download_dir: Path) -> Ingredient:
    log.info("ingredient %s is %s version %s from %s", spec, version.name, version.version, version.source)
    return Ingredient(
        spec, _download(version.source, download_dir), run_id=version.run_id or None,
        model_version=f"{version.name}/{version.version}",
    )


def _download(uri: str, download_dir: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    download_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", uri, download_dir)
    return Path(download_artifacts(artifact_uri=uri, dst_path=str(download_dir)))
