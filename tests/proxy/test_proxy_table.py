"""The closing table: every seed, the seed mean and every soup, with the audit beside each recipe,
then each recipe's paired gain over no filter and the filters' recall per corruption kind."""

from __future__ import annotations

from bettersynth_demo.proxy.experiment import RecipeRow, format_table, gains, load_comparison, save_comparison


def _row(recipe: str, textvqa: list[float], mmbench: list[float], recall: dict[str, list[int]]) -> RecipeRow:
    finetunes = {f"seed{i}": {"textvqa": t, "mmbench_circular": m} for i, (t, m) in enumerate(zip(textvqa, mmbench))}
    return RecipeRow(recipe, "filter", 621, finetunes, {"soup-uniform": {"textvqa": 18.0, "mmbench_circular": 46.0}},
                     "run", 150.0, {"samples": 621, "truthful": 596, "recaptioned": 0}, recall)


def test_table_lists_seeds_mean_soups_and_audit() -> None:
    row = _row("similarity", [20.0, 16.0], [47.0, 49.0], {})
    table = format_table({"rows": [row], "threshold": 0.88, "scorer_auc": {"overall": 0.981, "wrong_shape": 0.93}})
    lines = table.splitlines()
    assert "0.981" in lines[0] and "wrong_shape 0.93" in lines[0] and "0.88" in lines[1]
    assert lines[3].split()[:4] == ["similarity", "621", "96", "%"]
    assert [line.split()[-3:] for line in lines[3:]] == [
        ["seed0", "20.00", "47.00"], ["seed1", "16.00", "49.00"], ["mean", "18.00", "48.00"],
        ["soup-uniform", "18.00", "46.00"]]
    assert row.mean("mmbench_circular") == 48.0


def test_table_gives_paired_gains_with_intervals_and_the_unseen_kinds_recall_on_its_own_line() -> None:
    base = _row("no-filter", [60, 62, 58, 61, 59], [40, 45, 42, 44, 41], {"wrong_position": [0, 30]})
    better = _row("similarity", [66, 69, 63, 67, 65], [40, 46, 41, 45, 41],
                  {"too_short": [30, 30], "wrong_position": [9, 30]})
    found = gains([base, better])
    assert set(found) == {"similarity"} and found["similarity"]["textvqa"].n == 5
    assert not found["similarity"]["textvqa"].includes_zero and found["similarity"]["mmbench_circular"].includes_zero
    floors = {"textvqa_random_ocr": 61.11, "textvqa_most_frequent": 24.93, "mmbench_circular_chance": 11.37}
    lines = format_table({"rows": [base, better], "threshold": 0.88, "scorer_auc": {}, "baselines": floors}).splitlines()
    assert lines[2] == ("trivial baselines (no image): TextVQA random OCR token 61.11, TextVQA most frequent answer "
                        "24.93, MMBench circular option-letter chance 11.37")
    start = lines.index("gain over no-filter, mean of 5 paired seeds [paired bootstrap 95 % interval]:")
    textvqa, mmbench = lines[start + 1].split(), lines[start + 2].split()
    assert textvqa[:3] == ["similarity", "TextVQA", "+6.00"] and "includes" not in textvqa
    assert mmbench[:2] == ["MMBench", "+0.20"] and lines[start + 2].endswith("includes 0: no gain shown")
    assert "filter recall, similarity: too_short 100 % (30 of 30), wrong_position 30 % (9 of 30)" in lines
    assert lines[-1] == ("filter recall on wrong_position (never a negative in scorer training): "
                         "no-filter 0 % (0 of 30), similarity 30 % (9 of 30)")


def test_a_saved_comparison_formats_as_the_run_did(tmp_path) -> None:
    rows = [_row("no-filter", [60, 62], [40, 45], {"wrong_position": [0, 3]}),
            _row("similarity", [66, 69], [40, 46], {"wrong_position": [1, 3]})]
    result = {"rows": rows, "threshold": 0.88, "scorer_auc": {"overall": 0.9}, "baselines": {"textvqa_random_ocr": 61.0}}
    save_comparison(tmp_path, result)
    again = load_comparison(tmp_path)
    assert again["rows"] == rows and format_table(again) == format_table(result)
