"""Which benchmark images show pixels a training image shows: the check behind a clean evaluation split.

Why: the generator draws benchmarks outside the training scenes (``ledger``),
but a claim about the files should be checked on the files. Every image is
decoded and its RGB array hashed; a training PNG is also hashed after the JPEG
round trip the TextVQA images take (same settings), so a TextVQA JPEG of a
trained scene is caught although its bytes and pixels differ from the PNG's.

Example::

    shared = shared_pixels(benchmark_images(paths.world), paths.training_images())
    assert not any(shared.values())
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image

from bettersynth_demo.benchmarks import CIRCULAR_STRIDE
from bettersynth_demo.ledger import pixel_digest
from bettersynth_demo.render import encode_image
from bettersynth_demo.world import WorldPaths


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as handle:
        return handle.convert("RGB")


def benchmark_images(world: WorldPaths) -> dict[str, list[tuple[str, Image.Image]]]:
    """(name, decoded image) of every eval and held-out question, by split, in question order."""
    splits: dict[str, list[tuple[str, Image.Image]]] = {}
    for split, textvqa, tsv in (("eval", world.textvqa, world.mmbench_tsv),
                                ("heldout", world.heldout_textvqa, world.heldout_mmbench_tsv)):
        data = json.loads(textvqa.annotations.read_text(encoding="utf-8"))["data"]
        splits[f"{split}/textvqa"] = [(d["image_id"], _decoded((textvqa.images / f"{d['image_id']}.jpg").read_bytes()))
                                      for d in data]
        with tsv.open(encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.DictReader(handle, delimiter="\t") if int(row["index"]) < CIRCULAR_STRIDE]
        splits[f"{split}/mmbench"] = [(f"index {row['index']}", _decoded(base64.b64decode(row["image"])))
                                      for row in sorted(rows, key=lambda row: int(row["index"]))]
    return splits


def training_digests(folders: dict[str, Path]) -> dict[str, str]:
    """Pixel digest -> training split, for every image in the folders: as decoded and after a JPEG round trip."""
    digests: dict[str, str] = {}
    for split, folder in folders.items():
        for path in sorted(Path(folder).glob("*")):
            image = _decoded(path.read_bytes())
            digests[pixel_digest(image)] = split
            digests[pixel_digest(_decoded(encode_image(image, "jpeg")))] = split
    return digests


def shared_pixels(benchmarks: dict[str, list[tuple[str, Image.Image]]],
                  training: dict[str, Path]) -> dict[str, list[tuple[str, str]]]:
    """Benchmark split -> (image name, training split) of each image whose pixels a training image has."""
    digests = training_digests(training)
    return {split: [(name, digests[d]) for name, image in images if (d := pixel_digest(image)) in digests]
            for split, images in benchmarks.items()}
