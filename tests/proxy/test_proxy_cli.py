"""``bettersynth proxy`` arguments: the soups default to greedy, others are opt-in."""

from __future__ import annotations

import pytest

from bettersynth.cli.main import build_parser


def test_proxy_soups_default_to_greedy() -> None:
    args = build_parser().parse_args(["proxy"])
    assert args.soup_methods == ["greedy"]


def test_proxy_takes_more_soup_methods_and_refuses_unknown_ones(capsys) -> None:
    args = build_parser().parse_args(["proxy", "--soup-methods", "uniform", "greedy"])
    assert args.soup_methods == ["uniform", "greedy"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--soup-methods", "gready"])
    assert "invalid choice: 'gready'" in capsys.readouterr().err


def test_proxy_trains_five_independent_seeds_by_default() -> None:
    from bettersynth_demo.proxy.config import SEEDS, ProxyConfig

    assert build_parser().parse_args(["proxy"]).seeds is None  # the command then takes ProxyConfig's
    assert ProxyConfig().seeds == list(SEEDS) and len(SEEDS) >= 5
    assert ProxyConfig().train_plan["finetune_from"] == "own"  # each seed its own stage 1 and stage 2


def test_proxy_world_only_writes_the_world_and_finds_no_shared_pixels(tmp_path, capsys) -> None:
    """``bettersynth proxy --world-only``: the default world, nothing trained, every benchmark image checked."""
    args = build_parser().parse_args(["proxy", "--workspace", str(tmp_path), "--world-only"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    for split, n in (("eval/textvqa", 300), ("eval/mmbench", 300), ("heldout/textvqa", 150), ("heldout/mmbench", 150)):
        assert f"{split}: {n} images, 0 with the pixels of a training image" in out
    world = tmp_path / "data" / "proxy"
    assert (world / "proxy_config.json").is_file() and (world / "world" / "scene_index.json").is_file()
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()
