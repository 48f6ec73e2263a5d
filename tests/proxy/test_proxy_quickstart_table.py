"""The quickstart's closing table: every model beside the trivial baselines, and a champion that won by a margin."""

from __future__ import annotations

import pytest

from bettersynth.cli.main import build_parser
from bettersynth_demo.proxy.experiment import RecipeRow
from bettersynth_demo.proxy.quickstart import (
    TIE_MARGIN,
    ChampionReport,
    below_floor,
    champion_line,
    format_quickstart,
    quickstart_config,
)

FLOORS = {"textvqa_random_ocr": 61.0, "textvqa_most_frequent": 22.0, "mmbench_circular_chance": 11.0}


def _row(recipe: str, scores: list[tuple[float, float]], truthful: int) -> RecipeRow:
    finetunes = {f"seed{i}": {"textvqa": t, "mmbench_circular": m} for i, (t, m) in enumerate(scores)}
    soup = {"soup-greedy": dict(finetunes["seed0"])}
    return RecipeRow(recipe, "", 400, finetunes, soup, "run-" + recipe, 100.0, {"samples": 400, "truthful": truthful})


def test_every_model_is_shown_beside_the_floors() -> None:
    rows = [_row("no-filter", [(64.0, 30.0), (62.0, 28.0)], 100), _row("similarity", [(70.0, 45.0), (69.0, 41.0)], 360)]
    table = format_quickstart({"rows": rows, "baselines": FLOORS}, None).splitlines()
    assert table[0].startswith("trivial baselines (no image): TextVQA random OCR token 61.00")
    body = [line.split() for line in table[2:8]]
    assert body[0][:4] == ["no-filter", "400", "25", "%"]
    assert body[0][-6:] == ["seed0", "64.00", "+3.00", "30.00", "+19.00", "47.00"]
    assert body[5][-6:] == ["soup-greedy", "70.00", "+9.00", "45.00", "+34.00", "57.50"]
    assert "every model clears the trivial baselines" in table
    assert table[-1] == "champion: none registered"


def test_a_model_at_a_floor_is_named() -> None:
    rows = [_row("no-filter", [(61.0, 30.0), (62.0, 28.0)], 100)]
    assert below_floor({"rows": rows, "baselines": FLOORS}) == ["no-filter seed0 textvqa", "no-filter soup-greedy textvqa"]


def test_a_champion_ahead_by_less_than_the_margin_is_called_a_tie() -> None:
    won = ChampionReport("6", "similarity", "soup-greedy", 55.0, "v2 (no-filter seed1)", 47.5)
    assert champion_line(won) == ("champion: v6 (similarity soup-greedy, score 55.00), won by 7.50 points over "
                                  "v2 (no-filter seed1) at 47.50")
    tied = ChampionReport("6", "similarity", "seed0", 47.9, "v2 (no-filter seed1)", 47.9 - TIE_MARGIN / 2)
    assert champion_line(tied).endswith(f"a tie (under {TIE_MARGIN:.2f} points, the larger of {TIE_MARGIN:.1f} "
                                        "and its seeds' spread), no recipe won")
    # Measured in a quickstart run: no filter's seeds scored 42.00 and 28.25, so a 2-point lead is one draw.
    noisy = ChampionReport("1", "no-filter", "seed0", 42.0, "v6 (similarity soup-greedy)", 40.0, spread=13.75)
    assert "a tie (under 13.75 points" in champion_line(noisy)


def test_quickstart_runs_two_recipes_by_default_and_the_pico_loop_on_request(tmp_path) -> None:
    args = build_parser().parse_args(["quickstart"])
    assert not args.pico and args.seeds == [0, 1]
    config = quickstart_config(tmp_path, args.seeds)
    assert config.recipes == ("no-filter", "similarity") and config.soup_methods == ("greedy",)
    assert config.world.world.mismatch_fraction > 0.5 and config.prepare_in_parallel
    assert build_parser().parse_args(["quickstart", "--pico", "--arch", "mgm"]).pico


@pytest.mark.parametrize("recipes, needed", [(("no-filter", "similarity"), False), (("similarity-recaption",), True)])
def test_the_captioner_trains_only_for_a_recipe_that_recaptions(recipes, needed) -> None:
    from bettersynth_demo.proxy.experiment import needs_captioner

    assert needs_captioner(recipes) is needed
