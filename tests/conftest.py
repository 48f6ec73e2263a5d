"""Session-wide fixtures: one small demo world and the pico models built from it, made once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bettersynth_demo.world import WorldConfig

SMALL_WORLD = WorldConfig(
    n_seed_samples=24, n_instruct=16, n_textvqa=6, n_mmbench=4, n_heldout_textvqa=4, n_heldout_mmbench=3
)


@pytest.fixture(scope="session", autouse=True)
def _isolated_score_cache(tmp_path_factory):
    """Tests never read or write the user's score cache under ~/.cache."""
    import os

    previous = os.environ.get("BETTERSYNTH_CACHE_DIR")
    os.environ["BETTERSYNTH_CACHE_DIR"] = str(tmp_path_factory.mktemp("score-cache"))
    yield
    if previous is None:
        os.environ.pop("BETTERSYNTH_CACHE_DIR", None)
    else:
        os.environ["BETTERSYNTH_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    from bettersynth_demo.world import build_world

    return build_world(tmp_path_factory.mktemp("world"), SMALL_WORLD)


@pytest.fixture(scope="session")
def pico_models(tmp_path_factory, small_world) -> Path:
    """``clip/``, ``captioner/`` and ``llava-base/`` under one model root, as the quickstart lays them out."""
    from bettersynth_demo.models import build_tiny_captioner, build_tiny_clip, build_tiny_llava
    from bettersynth_demo.world import all_texts

    root = tmp_path_factory.mktemp("models")
    texts = all_texts(small_world)
    build_tiny_clip(root / "clip", texts)
    build_tiny_captioner(root / "captioner", texts)
    build_tiny_llava(root / "llava-base", texts)
    return root


@pytest.fixture(scope="session")
def pico_causal_lm(tmp_path_factory, small_world) -> Path:
    """A pico ``LlamaForCausalLM`` directory (perplexity scorer, CapFusion fuser)."""
    from bettersynth_demo.models import build_tiny_causal_lm
    from bettersynth_demo.world import all_texts

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "causal-lm", all_texts(small_world))


@pytest.fixture(scope="session")
def pico_open_clip(tmp_path_factory) -> dict[str, Path]:
    """Pico open_clip models in the ``local-dir:`` layout: ``{"vit": dir, "convnext": dir}``."""
    from bettersynth_demo.open_clip_models import build_tiny_open_clip

    root = tmp_path_factory.mktemp("open-clip")
    return {kind: build_tiny_open_clip(root / kind, kind) for kind in ("vit", "convnext")}


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A throwaway MLflow store for the steps (and kfp.local subprocesses) to log into."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "BETTERSYNTH_PARENT_RUN_ID"):
            patch.delenv(name, raising=False)
        mlflow.set_tracking_uri(uri)
        mlflow.MlflowClient().search_experiments()  # create the tables now, not racing in parallel steps
        yield uri
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def compiled_package(tmp_path_factory):
    """``compiled_package(pipeline, profile, **options) -> Path``: each KFP package compiled once a session.

    Why: KFP's task setters call ``inspect.stack()`` (source context for every frame, each looked up
    through ``sys.modules``), so one compile costs 10-15 s inside a test process that has imported
    torch, transformers and MLflow, against about 1 s in a fresh ``bettersynth compile``.
    Callers only read the package.
    """
    from bettersynth.platform.submit import compile_package

    root = tmp_path_factory.mktemp("packages")
    packages: dict[tuple, Path] = {}

    def compiled(pipeline: str, profile: str, **options) -> Path:
        key = (pipeline, profile, tuple(sorted(options.items())))
        if key not in packages:
            packages[key] = compile_package(pipeline, profile, root / f"package-{len(packages)}.yaml", options=options)
        return packages[key]

    return compiled
