"""Captions agree with the drawn image, and corrupted ones lie in exactly the labelled way.

The captions are parsed back with a regex and the images are read pixel by pixel, so
both checks are independent of the code that wrote them.
"""

from __future__ import annotations

import json
import re
from collections import deque

import numpy as np
import pytest
from PIL import Image

from bettersynth.data.jsonl import read_jsonl
from bettersynth_demo.render import cell_box
from bettersynth_demo.scene import COLOURS
from bettersynth_demo.world import DEMO_CORRUPTIONS, WorldConfig, WorldPaths, build_world

COUNT = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
GROUP_RE = re.compile(
    r"\b(a|an|one|two|three|four) (red|green|blue|yellow|purple|orange) (circle|square|triangle)s?"
    r"(?: (on the left|on the right|at the top|at the bottom|in the center))?\b"
)
POSITION = {"on the left": "left", "on the right": "right", "at the top": "top",
            "at the bottom": "bottom", "in the center": "center", None: None}  # fmt: skip


def parse(caption: str) -> tuple[list[tuple], str | None]:
    """[(shape, colour, count, position)] in caption order, and the upper-case word if any."""
    groups = [(m[3], m[2], COUNT[m[1]], POSITION[m[4]]) for m in GROUP_RE.finditer(caption)]
    words = re.findall(r"\b[A-Z]{2,}\b", caption)
    assert len(words) <= 1, caption
    return groups, words[0] if words else None


def n_words(text: str) -> int:
    return len(re.sub(r"[^\w\s]", " ", text).split())


def truth_groups(label: dict) -> list[tuple]:
    return [(o["shape"], o["colour"], o["count"], o["position"]) for o in label["truth"]["objects"]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldPaths:
    kinds = (*DEMO_CORRUPTIONS, "wrong_position")  # the proxy world's kinds: 90 corrupted, 15 of each
    return build_world(tmp_path_factory.mktemp("world"), WorldConfig(seed=11, n_instruct=0, corruptions=kinds))


@pytest.fixture(scope="module")
def captions(world: WorldPaths) -> dict[str, str]:
    return {s.id: s.chunks()[0][0] for s in read_jsonl(world.seed_jsonl)}


@pytest.fixture(scope="module")
def labels(world: WorldPaths) -> dict[str, dict]:
    return json.loads(world.labels.read_text(encoding="utf-8"))


def test_demo_clean_captions_tell_the_truth(captions: dict[str, str], labels: dict[str, dict]) -> None:
    clean = [sid for sid, label in labels.items() if not label["corrupted"]]
    assert len(clean) == 210
    phrasings = set()
    for sid in clean:
        groups, word = parse(captions[sid])
        assert groups == truth_groups(labels[sid]), captions[sid]
        assert word == labels[sid]["truth"]["word"]
        assert n_words(captions[sid]) >= 10
        phrasings.add(" ".join(captions[sid].split()[:3]))
    assert len(phrasings) >= 4


@pytest.mark.parametrize("kind, field", [("wrong_colour", 1), ("wrong_shape", 0), ("wrong_count", 2),
                                         ("wrong_position", 3)])
def test_demo_attribute_corruptions_change_one_field(
    captions: dict[str, str], labels: dict[str, dict], kind: str, field: int
) -> None:
    cases = [sid for sid, label in labels.items() if label["kind"] == kind]
    assert len(cases) == 15
    for sid in cases:
        label, truth = labels[sid], truth_groups(labels[sid])
        claimed, word = parse(captions[sid])
        assert word == label["truth"]["word"]
        assert len(claimed) == len(truth)
        differ = [i for i in range(len(truth)) if claimed[i] != truth[i]]
        assert differ == [label["group"]], captions[sid]
        got, want = claimed[label["group"]], truth[label["group"]]
        assert [j for j in range(4) if got[j] != want[j]] == [field]
        assert got[field] == label["claimed"] and want[field] == label["true"] != label["claimed"]
        if kind != "wrong_count":  # the claimed colour/shape/position is nowhere in the image
            assert label["claimed"] not in {g[field] for g in truth}
        if kind == "wrong_position" and label["truth"]["word"]:  # nor where the sign is
            assert label["claimed"] != label["truth"]["sign_band"]


def test_demo_unrelated_captions_describe_another_image(captions: dict[str, str], labels: dict[str, dict]) -> None:
    cases = [sid for sid, label in labels.items() if label["kind"] == "unrelated"]
    assert len(cases) == 15
    for sid in cases:
        source = labels[sid]["source_id"]
        assert source != sid
        claimed, _ = parse(captions[sid])
        assert claimed == truth_groups(labels[source])
        assert sorted(claimed) != sorted(truth_groups(labels[sid]))


def test_demo_short_captions_are_short_but_true(captions: dict[str, str], labels: dict[str, dict]) -> None:
    cases = [sid for sid, label in labels.items() if label["kind"] == "too_short"]
    assert len(cases) == 15
    for sid in cases:
        assert n_words(captions[sid]) < 10
        claimed, _ = parse(captions[sid])
        truth = {g[:3] for g in truth_groups(labels[sid])}
        assert claimed and all(g[:3] in truth and g[3] is None for g in claimed)


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a boolean mask (breadth-first search)."""
    seen = np.zeros_like(mask)
    parts = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, part = deque([(y, x)]), []
        while queue:
            cy, cx = queue.popleft()
            part.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        parts.append(part)
    return parts


def test_demo_images_show_the_labelled_scene(world: WorldPaths, labels: dict[str, dict]) -> None:
    """Each group is `count` blobs of its colour in its cell, with the fill ratio of its shape."""
    fill_range = {"square": (0.95, 1.01), "circle": (0.65, 0.9), "triangle": (0.4, 0.65)}
    for sid, label in list(labels.items())[:120]:
        pixels = np.asarray(Image.open(world.seed_images / f"{sid}.png").convert("RGB"))
        for obj in label["truth"]["objects"]:
            mask = np.all(pixels == COLOURS[obj["colour"]], axis=-1)
            x0, y0, x1, y1 = cell_box(obj["position"], 64)
            assert mask.sum() == mask[y0:y1, x0:x1].sum() > 0, sid  # only in its own cell
            blobs = _components(mask)
            assert len(blobs) == obj["count"], sid
            for blob in blobs:
                ys, xs = zip(*blob)
                box = (max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1)
                low, high = fill_range[obj["shape"]]
                assert low <= len(blob) / box <= high, (sid, obj)
        dark = np.all(pixels < 60, axis=-1)
        band = {"top": dark[:21], "bottom": dark[43:]}
        if label["truth"]["word"]:
            assert band[label["truth"]["sign_band"]].sum() > 30
        else:
            assert dark.sum() == 0
