"""The closing table: every seed, the seed mean and every soup, with the audit beside each recipe."""

from __future__ import annotations

from bettersynth_demo.proxy.experiment import RecipeRow, format_table


def test_table_lists_seeds_mean_soups_and_audit() -> None:
    row = RecipeRow("similarity", "filter", 621, {"seed0": {"textvqa": 20.0, "mmbench_circular": 47.0},
                                                  "seed1": {"textvqa": 16.0, "mmbench_circular": 49.0}},
                    {"soup-uniform": {"textvqa": 18.0, "mmbench_circular": 46.0}}, "run", 150.0,
                    {"samples": 621, "truthful": 596, "recaptioned": 0})
    table = format_table({"rows": [row], "threshold": 0.88, "scorer_auc": {"overall": 0.981, "wrong_shape": 0.93}})
    lines = table.splitlines()
    assert "0.981" in lines[0] and "wrong_shape 0.93" in lines[0] and "0.88" in lines[1]
    assert lines[3].split()[:4] == ["similarity", "621", "96", "%"]
    assert [line.split()[-3:] for line in lines[3:]] == [
        ["seed0", "20.00", "47.00"], ["seed1", "16.00", "49.00"], ["mean", "18.00", "48.00"],
        ["soup-uniform", "18.00", "46.00"]]
    assert row.mean("mmbench_circular") == 48.0
