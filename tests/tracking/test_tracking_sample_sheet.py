"""The sample sheet and stat histograms, from a hand-written step output whose fates are known."""

from __future__ import annotations

import json

from PIL import Image

from bettersynth.reports.sample_sheet import pick_cards, stat_values, write_step_pictures


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _step(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    for folder in (source / "images", out / "images"):
        folder.mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (32, 32), "red").save(source / "images" / f"{name}.png")
        Image.new("RGB", (32, 32), "red").save(out / "images" / f"{name}.png")
    (source / "images" / "c.png").write_bytes(b"not a png")  # unreadable: a grey tile, not a crash
    sample = lambda i, text, **extra: {"id": i, "text": f"<__dj__image> {text} <|__dj__eoc|>", "images": [f"images/{i[0]}.png"], **extra}  # noqa: E731
    _write(source / "samples.jsonl", [sample("a", "a red square"), sample("b", "blue"), sample("c", "a cat on a mat")])
    _write(out / "samples.jsonl", [
        sample("a", "a red square", __dj__stats__={"image_text_similarity": [0.4]}),
        sample("c#cap0", "a red tile", __dj__stats__={"image_text_similarity": [0.3]}),
    ])
    _write(out / "outcomes.jsonl", [
        {"id": "a", "status": "kept"},
        {"id": "b", "status": "filtered", "op": "image_text_similarity_filter", "stat": "image_text_similarity", "value": [0.05], "bound": "min_score=0.1"},
        {"id": "c", "status": "filtered", "op": "image_captioning_mapper", "stat": None, "value": None, "bound": None, "replaced_by": ["c#cap0"]},
        {"id": "c#cap0", "status": "kept", "source_id": "c"},
    ])
    return source, out


def test_cards_sort_samples_by_fate(tmp_path):
    source, out = _step(tmp_path)
    cards = {card.sample_id: card for card in pick_cards(source, out)}
    assert {k: c.kind for k, c in cards.items()} == {"a": "kept", "b": "filtered", "c#cap0": "re-captioned"}
    assert "min_score=0.1" in cards["b"].note and cards["b"].image == source / "images" / "b.png"
    assert cards["c#cap0"].note == "was: a cat on a mat" and cards["c#cap0"].caption == "a red tile"
    assert cards["a"].note == "image_text_similarity=[0.4]"


def test_stat_values_and_pictures(tmp_path):
    source, out = _step(tmp_path)
    values = stat_values(out, ["image_text_similarity"])
    assert values == {"image_text_similarity": {"kept": [0.4, 0.3], "filtered": [0.05], "bounds": [0.1]}}
    paths = write_step_pictures(source, out, ["image_text_similarity"], tmp_path / "pictures", title="t")
    for path in paths[:2]:
        with Image.open(path) as image:
            assert image.format == "PNG"
    assert json.loads(paths[2].read_text()) == values
