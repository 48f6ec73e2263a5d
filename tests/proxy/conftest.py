"""One tiny proxy world per session, shared by the proxy tests (seconds to build, no training)."""

from __future__ import annotations

import pytest

from bettersynth_demo.proxy.world import (
    ProxyWorldConfig,
    ProxyWorldPaths,
    build_proxy_world,
)
from bettersynth_demo.world import WorldConfig

TINY = ProxyWorldConfig(
    world=WorldConfig(seed=2, n_seed_samples=60, mismatch_fraction=0.5, n_instruct=0, n_textvqa=4, n_mmbench=4,
                      n_heldout_textvqa=2, n_heldout_mmbench=2),
    n_instruct=20, n_scorer=80, n_calibration=10,
)


@pytest.fixture(scope="session")
def tiny_config() -> ProxyWorldConfig:
    return TINY


@pytest.fixture(scope="session")
def proxy(tmp_path_factory) -> ProxyWorldPaths:
    return build_proxy_world(tmp_path_factory.mktemp("proxy"), TINY)
