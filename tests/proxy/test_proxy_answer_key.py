"""The world's answer key stays out of everything the pipeline sees: its arguments, and its view of the disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from bettersynth_demo.proxy.config import ProxyConfig, ProxyModels
from bettersynth_demo.proxy.pipeline_run import (
    WORKSPACE_ARGUMENT,
    paths_reaching,
    pipeline_arguments,
    sealed,
)
from bettersynth_demo.proxy.recipes import RECIPES, write_recipe_files
from bettersynth_demo.proxy.world import build_proxy_world


@pytest.fixture
def laid_out(tmp_path: Path, tiny_config):
    """A proxy workspace laid out as ``prepare_models`` leaves it (models not trained: not needed here)."""
    world = build_proxy_world(tmp_path / "ws" / "data" / "proxy", tiny_config)
    config = ProxyConfig(workspace=tmp_path / "ws", world=tiny_config)
    models = ProxyModels(world, tmp_path / "ws" / "models" / "proxy", 0.5, {}, [])
    return config, models


@pytest.mark.parametrize("name", RECIPES.names())
def test_no_pipeline_argument_reaches_the_answer_key(laid_out, name: str) -> None:
    config, models = laid_out
    spec = RECIPES.get(name)(0.5)
    recipes = write_recipe_files(name, spec, Path(config.workspace) / "recipes" / "proxy")
    arguments = pipeline_arguments(config, models, name, spec, *recipes, Path(config.workspace) / "train.yaml")
    # Only the DVC project root holds it (version_dataset writes data/variants/ there, reads no data).
    assert paths_reaching(arguments, models.world.world.labels) == [WORKSPACE_ARGUMENT]
    for key, value in arguments.items():
        if key != WORKSPACE_ARGUMENT and isinstance(value, str) and Path(value).is_dir():
            assert not any(p.name == models.world.world.labels.name for p in Path(value).rglob("*")), key


def test_sealed_moves_the_key_out_of_the_workspace_and_back(laid_out) -> None:
    config, models = laid_out
    labels = models.world.world.labels
    before = labels.read_bytes()
    with pytest.raises(RuntimeError, match="a step failed"), sealed(labels):
        assert not labels.exists()
        assert not any(p.name == labels.name for p in Path(config.workspace).rglob("*"))
        raise RuntimeError("a step failed")
    assert labels.read_bytes() == before  # restored even when the pipeline fails
