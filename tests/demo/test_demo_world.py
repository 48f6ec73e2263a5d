"""The demo world's layout, seed/instruct formats, answer-key isolation and determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from bettersynth.core.sample import CHUNK_END, IMAGE_TOKEN, Sample
from bettersynth.data.jsonl import read_jsonl
from bettersynth_demo.world import WorldConfig, WorldPaths, all_texts, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldPaths:
    return build_world(tmp_path_factory.mktemp("world"), WorldConfig(seed=3))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_demo_seed_jsonl_parses_with_unique_ids_and_existing_images(world: WorldPaths) -> None:
    items = list(read_jsonl(world.seed_jsonl))
    assert all(isinstance(item, Sample) for item in items)
    assert len(items) == 300
    assert len({s.id for s in items}) == 300
    for sample in items:
        assert sample.text.startswith(IMAGE_TOKEN + " ") and sample.text.endswith(" " + CHUNK_END)
        assert len(sample.images) == 1 and not Path(sample.images[0]).is_absolute()
        image = Image.open(world.seed_jsonl.parent / sample.images[0])
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)


def test_demo_labels_stay_out_of_samples(world: WorldPaths) -> None:
    raw = world.seed_jsonl.read_text(encoding="utf-8")
    for line in raw.splitlines():
        assert set(json.loads(line)) == {"id", "text", "images"}
    for needle in ("corrupt", "wrong_", "unrelated", "too_short", "clean", "truth"):
        assert needle not in raw
    labels = json.loads(world.labels.read_text(encoding="utf-8"))
    assert set(labels) == {json.loads(line)["id"] for line in raw.splitlines()}
    assert not any(path.name == "world_labels.json" for path in world.seed_jsonl.parent.rglob("*"))


@pytest.mark.parametrize("n, fraction", [(300, 0.3), (50, 0.1), (40, 0.0), (20, 1.0)])
def test_demo_mismatch_fraction_and_kinds_spread(tmp_path: Path, n: int, fraction: float) -> None:
    paths = build_world(
        tmp_path,
        WorldConfig(seed=1, n_seed_samples=n, mismatch_fraction=fraction, n_instruct=2, n_textvqa=1,
                    n_mmbench=1, n_heldout_textvqa=1, n_heldout_mmbench=1),
    )  # fmt: skip
    labels = json.loads(paths.labels.read_text(encoding="utf-8"))
    bad = [v for v in labels.values() if v["corrupted"]]
    assert abs(len(bad) / n - fraction) <= 0.5 / n + 1e-9
    assert all(v["kind"] == "clean" for v in labels.values() if not v["corrupted"])
    kinds = [v["kind"] for v in bad]
    if fraction == 0.3:
        assert {kinds.count(k) for k in set(kinds)} == {18}
        assert set(kinds) == {"wrong_colour", "wrong_shape", "wrong_count", "unrelated", "too_short"}


def test_demo_instruct_is_llava_json(world: WorldPaths) -> None:
    records = json.loads(world.instruct_json.read_text(encoding="utf-8"))
    assert len(records) == 200 and len({r["id"] for r in records}) == 200
    n_turns = set()
    for record in records:
        assert (world.instruct_json.parent / record["image"]).is_file()
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert all("<image>" not in t["value"] for t in turns[1:])
        assert all(t["value"].strip() for t in turns)
        n_turns.add(len(turns) // 2)
    assert {1, 2, 3} <= n_turns


def test_demo_two_builds_are_byte_identical(tmp_path: Path) -> None:
    first = build_world(tmp_path / "a", WorldConfig(seed=7))
    second = build_world(tmp_path / "b", WorldConfig(seed=7))
    hashes = _hashes(first.root)
    assert len(hashes) > 500
    assert hashes == _hashes(second.root)
    other = build_world(tmp_path / "c", WorldConfig(seed=8))
    assert _hashes(other.root)["seed/samples.jsonl"] != hashes["seed/samples.jsonl"]


def test_demo_rebuild_replaces_old_world_and_refuses_foreign_folder(tmp_path: Path) -> None:
    small = WorldConfig(n_seed_samples=10, n_instruct=3, n_textvqa=2, n_mmbench=2,
                        n_heldout_textvqa=1, n_heldout_mmbench=1)  # fmt: skip
    build_world(tmp_path / "w", WorldConfig(n_seed_samples=30, n_instruct=3))
    paths = build_world(tmp_path / "w", small)
    assert len(list(paths.seed_images.iterdir())) == 10
    assert WorldConfig(**json.loads(paths.config.read_text())) == small
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="root"):
        build_world(foreign, small)
    assert (foreign / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "field, value",
    [("n_seed_samples", 1), ("mismatch_fraction", 1.5), ("image_size", 32), ("n_instruct", -1), ("word_prob", -0.1),
     ("corruptions", ("wrong_colour", "wrong_colur")), ("corruptions", ())],
)
def test_demo_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        WorldConfig(**{field: value})


def test_demo_larger_images(tmp_path: Path) -> None:
    paths = build_world(tmp_path, WorldConfig(n_seed_samples=4, n_instruct=1, n_textvqa=2, n_mmbench=1,
                                              n_heldout_textvqa=1, n_heldout_mmbench=1, image_size=128))  # fmt: skip
    for image_path in [*paths.seed_images.iterdir(), *paths.textvqa.images.iterdir()]:
        assert Image.open(image_path).size == (128, 128)


def test_demo_all_texts_covers_every_file(world: WorldPaths) -> None:
    texts = all_texts(world)
    assert all(isinstance(t, str) and t.strip() for t in texts)
    assert not any(token in t for t in texts for token in (IMAGE_TOKEN, CHUNK_END, "<image>"))
    captions = {s.chunks()[0][0] for s in read_jsonl(world.seed_jsonl)}
    assert captions <= set(texts)
    annotations = json.loads(world.heldout_textvqa.annotations.read_text())["data"]
    assert {a for entry in annotations for a in entry["answers"]} <= set(texts)
    assert {"red", "circle", "left", "1"} <= set(texts)
    instruct = json.loads(world.instruct_json.read_text())
    assert instruct[0]["conversations"][1]["value"] in texts
