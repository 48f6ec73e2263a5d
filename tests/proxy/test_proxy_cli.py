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
