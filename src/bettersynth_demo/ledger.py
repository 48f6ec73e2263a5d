"""The scenes a world's splits already show, by content and by rendered pixels.

Why: an evaluation image must not show what a training image shows. Comparing
scene keys alone misses scenes that differ as data but render alike (the same
two groups listed in the other order), so every scene is also recorded by the
hash of its rendered RGB pixels, the identity every encoding of it starts from.
The ledger keeps each split's scenes too, so a world can publish which scene
every split drew (``scene_index.json``) and anyone can check it.

Example::

    ledger = SceneLedger(image_size=64)
    ledger.add(scene, "seed")
    scene in ledger  # True; so is any scene that renders to the same pixels
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from PIL import Image

from bettersynth_demo.render import render_scene
from bettersynth_demo.scene import Scene


def pixel_digest(image: Image.Image) -> str:
    """sha256 of an image's decoded RGB array (with its size), not of any file's bytes."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


@dataclass
class SceneLedger:
    image_size: int  # the side the world renders at: pixels are compared at that size
    keys: set[tuple] = field(default_factory=set)
    pixels: set[str] = field(default_factory=set)
    splits: dict[str, list[Scene]] = field(default_factory=dict)  # split name -> its scenes, in draw order

    def add(self, scene: Scene, split: str) -> None:
        self.keys.add(scene.key())
        self.pixels.add(pixel_digest(render_scene(scene, self.image_size)))
        self.splits.setdefault(split, []).append(scene)

    def index(self, leave_out: tuple[str, ...] = ()) -> dict[str, list[dict]]:
        """Every split's scenes as JSON, but those of ``leave_out`` (the seed's live in the answer key)."""
        return {name: [s.to_json() for s in scenes] for name, scenes in self.splits.items() if name not in leave_out}

    def __contains__(self, scene: object) -> bool:
        if not isinstance(scene, Scene):
            return False
        return scene.key() in self.keys or pixel_digest(render_scene(scene, self.image_size)) in self.pixels

    def __len__(self) -> int:
        return len(self.keys)
