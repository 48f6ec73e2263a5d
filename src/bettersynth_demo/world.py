"""Build the offline demo world: seed captions, an instruction set and small benchmarks.

Why: the quickstart and the tests need the whole loop (filter → train → evaluate → soup)
to run on a laptop with no downloads, on data in the real formats, where we know which
captions are wrong. The answer key (``world_labels.json``) sits apart from everything
the pipeline reads, so no step can peek at it.

Layout under ``root``::

    seed/samples.jsonl, seed/images/*.png        Data-Juicer jsonl, single image per sample
    instruct/llava_instruct.json, images/*.png    LLaVA json for stage 2
    eval/textvqa/{TextVQA_0.5.1_val.json, llava_textvqa_val_v051_ocr.jsonl, train_images/*.jpg}
    eval/mmbench/mmbench_dev.tsv                  base64 PNG images, circular copies included
    heldout/textvqa/..., heldout/mmbench/...      same formats, disjoint scenes (soup selection)
    world_labels.json                             seed id -> {"corrupted", "kind", ...}
    scene_index.json                              split -> the scenes it drew (all but the seed's)
    world_config.json                             the WorldConfig that built it

Evaluation and held-out scenes are drawn last, outside every scene (and every
rendered image) a training split shows, so no benchmark image was trained on.

Example::

    paths = build_world(Path("/tmp/world"), WorldConfig(seed=1, n_seed_samples=50))
    texts = all_texts(paths)  # for training tiny tokenizers offline
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bettersynth.core.sample import Sample, caption_text
from bettersynth.data.jsonl import read_jsonl, write_samples
from bettersynth_demo.benchmarks import (
    CIRCULAR_STRIDE,
    MMBENCH_LETTERS,
    TEXTVQA_ANNOTATIONS,
    TEXTVQA_IMAGES,
    TEXTVQA_LLAVA_QUESTIONS,
    write_json,
    write_mmbench,
    write_textvqa,
)
from bettersynth_demo.captions import CORRUPTIONS, caption
from bettersynth_demo.ledger import SceneLedger
from bettersynth_demo.questions import MAX_OCR_DISTRACTORS, OCR_DISTRACTORS, QUESTIONS
from bettersynth_demo.render import MIN_SIZE, encode_image, render_scene
from bettersynth_demo.scene import Scene, random_scene

logger = logging.getLogger(__name__)

FIRST_TEXTVQA_QUESTION_ID = 34602  # where the official TextVQA val question ids start
INSTRUCT_KINDS = ("colour", "shape", "count", "position", "word")
_OUTPUTS = ("seed", "instruct", "eval", "heldout", "world_labels.json", "scene_index.json", "world_config.json")
# The corruption kinds of the demo world (the proxy world adds wrong_position); spread evenly in this order.
DEMO_CORRUPTIONS = ("too_short", "unrelated", "wrong_colour", "wrong_count", "wrong_shape")


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and randomness of a demo world; the defaults build in a few seconds."""

    seed: int = 0  # drives every random choice: the same config gives byte-identical files
    n_seed_samples: int = 300  # image–caption pairs in seed/samples.jsonl
    mismatch_fraction: float = 0.3  # share of seed captions corrupted (answer key in world_labels.json)
    n_instruct: int = 200  # images in the stage-2 LLaVA instruction set (1–3 question turns each)
    n_textvqa: int = 40  # TextVQA eval questions, one per image
    n_mmbench: int = 30  # MMBench eval questions, before circular copies
    n_heldout_textvqa: int = 20  # held-out TextVQA questions, for greedy soup selection
    n_heldout_mmbench: int = 16  # held-out MMBench questions, for greedy soup selection
    image_size: int = 64  # side of the square RGB images in pixels (at least 64)
    word_prob: float = 0.5  # share of seed, instruct and MMBench images that show a word
    corruptions: tuple[str, ...] = DEMO_CORRUPTIONS  # kinds of corrupted seed captions, in equal shares
    # Fewest and most OCR tokens beside the word in a TextVQA prompt: the random-OCR-token floor is
    # about the mean of 1 / (1 + distractors), 61 % at (0, 2); real TextVQA images list many more.
    ocr_distractors: tuple[int, int] = OCR_DISTRACTORS

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", tuple(self.corruptions))  # a list when read back from JSON
        object.__setattr__(self, "ocr_distractors", tuple(self.ocr_distractors))
        fewest, most = self.ocr_distractors
        if not 0 <= fewest <= most <= MAX_OCR_DISTRACTORS:
            raise ValueError(f"ocr_distractors must be (fewest, most) with 0 <= fewest <= most <= "
                             f"{MAX_OCR_DISTRACTORS}, got {self.ocr_distractors}")
        unknown = [kind for kind in self.corruptions if kind not in CORRUPTIONS]
        if unknown or not self.corruptions:
            raise ValueError(f"corruptions: unknown or none {unknown}; known: {CORRUPTIONS.names()}")
        if self.n_seed_samples < 2:
            raise ValueError(f"n_seed_samples must be at least 2, got {self.n_seed_samples}")
        for name in ("n_instruct", "n_textvqa", "n_mmbench", "n_heldout_textvqa", "n_heldout_mmbench"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_mmbench + self.n_heldout_mmbench >= CIRCULAR_STRIDE:
            raise ValueError(f"n_mmbench + n_heldout_mmbench must stay below {CIRCULAR_STRIDE}")
        for name in ("mismatch_fraction", "word_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.image_size < MIN_SIZE:
            raise ValueError(f"image_size must be at least {MIN_SIZE}, got {self.image_size}")


@dataclass(frozen=True)
class TextVQAPaths:
    """One TextVQA split folder in the official layout."""

    folder: Path
    annotations: Path  # TextVQA_0.5.1_val.json, with the ten answers per question
    questions: Path  # llava_textvqa_val_v051_ocr.jsonl, the prompts with OCR tokens
    images: Path  # train_images/<image_id>.jpg

    @classmethod
    def under(cls, folder: Path) -> "TextVQAPaths":
        return cls(folder, folder / TEXTVQA_ANNOTATIONS, folder / TEXTVQA_LLAVA_QUESTIONS, folder / TEXTVQA_IMAGES)


@dataclass(frozen=True)
class WorldPaths:
    """Where each part of a demo world lives; ``WorldPaths.under(root)`` finds a built one."""

    root: Path
    seed_jsonl: Path
    seed_images: Path
    instruct_json: Path
    instruct_images: Path
    textvqa: TextVQAPaths
    mmbench_tsv: Path
    heldout_textvqa: TextVQAPaths
    heldout_mmbench_tsv: Path
    labels: Path  # world_labels.json: the answer key, never read by the pipeline
    scene_index: Path  # scene_index.json: the scenes of every split but the seed's (those are in the key)
    config: Path  # world_config.json

    @classmethod
    def under(cls, root: Path) -> "WorldPaths":
        root = Path(root)
        return cls(
            root=root,
            seed_jsonl=root / "seed" / "samples.jsonl",
            seed_images=root / "seed" / "images",
            instruct_json=root / "instruct" / "llava_instruct.json",
            instruct_images=root / "instruct" / "images",
            textvqa=TextVQAPaths.under(root / "eval" / "textvqa"),
            mmbench_tsv=root / "eval" / "mmbench" / "mmbench_dev.tsv",
            heldout_textvqa=TextVQAPaths.under(root / "heldout" / "textvqa"),
            heldout_mmbench_tsv=root / "heldout" / "mmbench" / "mmbench_dev.tsv",
            labels=root / "world_labels.json",
            scene_index=root / "scene_index.json",
            config=root / "world_config.json",
        )


MoreTraining = Callable[[WorldPaths, SceneLedger], None]  # writes more training splits, adding their scenes


def build_world(root: Path, config: WorldConfig = WorldConfig(), more_training: MoreTraining | None = None) -> WorldPaths:
    """Write a demo world under ``root``, replacing an earlier demo world there.

    ``more_training`` writes a caller's own training splits (the proxy world's
    instruction and clean sets) after the seed and instruction sets and before
    the benchmarks, recording their scenes in the ledger it gets, so that the
    benchmarks are drawn outside them too.
    """
    paths = WorldPaths.under(root)
    _clear(paths)
    ledger = SceneLedger(config.image_size)
    _build_seed(paths, config, ledger)
    _build_instruct(paths, config, ledger)
    if more_training is not None:
        more_training(paths, ledger)
    _build_benchmarks(paths, config, ledger)
    write_json(paths.scene_index, ledger.index(leave_out=("seed",)))
    write_json(paths.config, asdict(config))
    logger.info("built demo world under %s (%d seed samples)", paths.root, config.n_seed_samples)
    return paths


def all_texts(paths: WorldPaths) -> list[str]:
    """Every caption, question, answer, hint and option in the world, in file order."""
    texts: list[str] = []
    for item in read_jsonl(paths.seed_jsonl):
        if isinstance(item, Sample):
            texts.extend(text for text, _ in item.chunks())
    for record in json.loads(paths.instruct_json.read_text(encoding="utf-8")):
        texts.extend(turn["value"].replace("<image>", "").strip() for turn in record["conversations"])
    for textvqa in (paths.textvqa, paths.heldout_textvqa):
        for entry in json.loads(textvqa.annotations.read_text(encoding="utf-8"))["data"]:
            texts.append(entry["question"])
            texts.extend(entry["answers"])
        for line in textvqa.questions.read_text(encoding="utf-8").splitlines():
            texts.append(json.loads(line)["text"])
    for tsv in (paths.mmbench_tsv, paths.heldout_mmbench_tsv):
        with tsv.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if int(row["index"]) < CIRCULAR_STRIDE:
                    fields = ["question", "hint", *MMBENCH_LETTERS]
                    texts.extend(row[name] for name in fields if row[name])
    return texts


def _rng(config: WorldConfig, section: str) -> random.Random:
    """One stream per section, so growing one part of the world leaves the others unchanged."""
    return random.Random(f"bettersynth.demo:{config.seed}:{section}")  # the name it was first seeded under: same world, byte for byte


def _clear(paths: WorldPaths) -> None:
    """Remove an earlier world's outputs; refuse to touch a folder that holds something else."""
    root = paths.root
    if root.exists() and any(root.iterdir()) and not paths.config.exists():
        raise ValueError(f"root: {root} is not empty and holds no demo world (no {paths.config.name})")
    for name in _OUTPUTS:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _unique_scenes(rng: random.Random, n: int, word_prob: float, seen: SceneLedger, split: str) -> list[Scene]:
    """``n`` scenes none of which ``seen`` holds (by key or by pixels), each recorded there under ``split``."""
    scenes: list[Scene] = []
    for _ in range(100 * n + 100):
        if len(scenes) == n:
            break
        scene = random_scene(rng, word_prob)
        if scene not in seen:
            seen.add(scene, split)
            scenes.append(scene)
    else:
        raise ValueError(f"n: cannot draw {n} distinct scenes")
    return scenes


def _build_benchmarks(paths: WorldPaths, config: WorldConfig, seen: SceneLedger) -> None:
    """Eval, then held-out, outside every scene ``seen`` holds: ids continue across the two, no scene repeats."""
    textvqa_rng, mmbench_rng = _rng(config, "textvqa"), _rng(config, "mmbench")
    splits = [
        ("eval", paths.textvqa, config.n_textvqa, 0, paths.mmbench_tsv, config.n_mmbench, 0),
        ("heldout", paths.heldout_textvqa, config.n_heldout_textvqa, config.n_textvqa,
         paths.heldout_mmbench_tsv, config.n_heldout_mmbench, config.n_mmbench),
    ]  # fmt: skip
    for split, textvqa, n_textvqa, first_qid, mmbench, n_mmbench, first_index in splits:
        write_textvqa(
            textvqa.folder,
            _unique_scenes(textvqa_rng, n_textvqa, 1.0, seen, f"{split}/textvqa"),
            textvqa_rng,
            split=split,
            first_question_id=FIRST_TEXTVQA_QUESTION_ID + first_qid,
            image_size=config.image_size,
            seed=config.seed,
            ocr_distractors=config.ocr_distractors,
        )
        scenes = _unique_scenes(mmbench_rng, n_mmbench, config.word_prob, seen, f"{split}/mmbench")
        write_mmbench(mmbench, scenes, mmbench_rng, first_index=first_index, image_size=config.image_size)


def _save_image(scene: Scene, path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(render_scene(scene, size), "png"))


def _build_seed(paths: WorldPaths, config: WorldConfig, ledger: SceneLedger) -> None:
    """Captions, a fixed share of them corrupted with kinds spread evenly; labels kept apart."""
    rng = _rng(config, "seed")
    n = config.n_seed_samples
    ids = [f"seed-{i:05d}" for i in range(n)]
    scenes = [random_scene(rng, config.word_prob) for _ in range(n)]
    corrupted = sorted(rng.sample(range(n), round(n * config.mismatch_fraction)))
    kinds = [config.corruptions[j % len(config.corruptions)] for j in range(len(corrupted))]
    rng.shuffle(kinds)
    kind_of = dict(zip(corrupted, kinds))
    pool = list(zip(ids, scenes))
    samples, labels = [], {}
    for i, (sample_id, scene) in enumerate(pool):
        label: dict = {"corrupted": i in kind_of, "kind": kind_of.get(i, "clean")}
        if i in kind_of:
            bad = CORRUPTIONS.get(kind_of[i])(scene, rng, pool)
            text = bad.caption
            label.update(bad.detail)
        else:
            text = caption(scene, rng)
        label["truth"] = scene.to_json()
        labels[sample_id] = label
        ledger.add(scene, "seed")
        image = f"images/{sample_id}.png"
        _save_image(scene, paths.seed_jsonl.parent / image, config.image_size)
        samples.append(Sample(id=sample_id, text=caption_text(text), images=[image]))
    write_samples(paths.seed_jsonl, samples)
    write_json(paths.labels, labels)


def _build_instruct(paths: WorldPaths, config: WorldConfig, ledger: SceneLedger) -> None:
    """1–3 question turns per image, sometimes with a request for a description."""
    rng = _rng(config, "instruct")
    records = []
    for i in range(config.n_instruct):
        sample_id = f"instruct-{i:05d}"
        scene = random_scene(rng, config.word_prob)
        questions = [q for kind in INSTRUCT_KINDS if (q := QUESTIONS.get(kind)(scene, rng)) is not None]
        turns = [(q.text, q.answer) for q in rng.sample(questions, rng.randint(1, 3))]
        if rng.random() < 0.2:
            turns.insert(rng.randint(0, len(turns)), ("Describe the image briefly.", caption(scene, rng)))
        conversations = []
        for number, (question, answer) in enumerate(turns):
            conversations.append({"from": "human", "value": f"<image>\n{question}" if number == 0 else question})
            conversations.append({"from": "gpt", "value": answer})
        image = f"images/{sample_id}.png"
        _save_image(scene, paths.instruct_json.parent / image, config.image_size)
        ledger.add(scene, "instruct")
        records.append({"id": sample_id, "image": image, "conversations": conversations})
    write_json(paths.instruct_json, records)

