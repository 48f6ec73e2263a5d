"""The proxy world: the demo world at a scale where data quality shows, plus a clean scorer split.

Why: a recipe comparison only means something when the models are good enough
for noisy captions to hurt them. The proxy world adds, next to the ordinary
demo world (``world/``, built by ``build_world``), what real practice has
outside the seed set: a clean image–caption corpus (``scorer/``, the stand-in
for the web-scale data CLIP and the LM were pretrained on), whose scenes are
disjoint from every seed scene. The seed set is larger than the training cap
(as in the Better Synth challenge: 400k seed, 200k cap), so a filter changes
*which* samples train, not how many steps run. The benchmarks are drawn after
every training split (seed, instruction, scorer and calibration; the LM and the
captioner learn from the scorer split), outside their scenes and rendered pixels.

Layout under ``root``::

    world/...                          the demo world (seed, instruct, eval, heldout, world_labels.json,
                                       scene_index.json: every split's scenes but the seed's)
    scorer/samples.jsonl, images/      clean captions of scenes never in the seed set (Data-Juicer jsonl)
    scorer/calibration.jsonl           a clean slice of it kept out of scorer training (threshold choice)
    scorer/chat.json                   a caption, then questions about it answered from it (the LM's chat corpus)
    proxy_config.json                  the ProxyWorldConfig that built it

Example::

    paths = build_proxy_world(Path("/tmp/proxy"), ProxyWorldConfig(seed=0))
    paths.world.seed_jsonl, paths.scorer_jsonl
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bettersynth.core.sample import Sample, caption_text
from bettersynth.data.jsonl import read_jsonl, write_samples
from bettersynth.eval.mmbench import ANSWER_SUFFIX, build_prompt
from bettersynth.eval.textvqa import build_prompt as build_textvqa_prompt
from bettersynth.eval.textvqa import parse_llava_text
from bettersynth_demo.benchmarks import (
    MMBENCH_KINDS,
    TEXTVQA_PROMPT_SUFFIX,
    TEXTVQA_QUESTIONS,
    write_json,
)
from bettersynth_demo.captions import caption
from bettersynth_demo.ledger import SceneLedger
from bettersynth_demo.questions import OCR_DISTRACTORS, QUESTIONS, ocr_tokens
from bettersynth_demo.render import encode_image, render_scene
from bettersynth_demo.scene import ObjectGroup, Scene, random_scene
from bettersynth_demo.world import DEMO_CORRUPTIONS, WorldConfig, WorldPaths, build_world

CONFIG_FILE = "proxy_config.json"
# The demo world's kinds plus one the scorer's hard negatives never make (they swap colour, shape,
# count and word, never a position): the filter's recall on it is what it does untaught.
UNSEEN_CORRUPTION = "wrong_position"
PROXY_CORRUPTIONS = (*DEMO_CORRUPTIONS, UNSEEN_CORRUPTION)


def default_world() -> WorldConfig:
    """Sizes measured to show the effect in minutes on 2 CPU cores (see ``bettersynth proxy``).

    The held-out split is what a greedy soup decides on: with 60 questions a benchmark, one
    question was 1.7 points, more than two stage-2 seeds differ, and one greedy soup in three
    kept the ingredient that scored worse on the eval split; with 150 each, all three soups scored
    at least their seeds' mean (the selection score: TextVQA and MMBench averaged). The held-out
    split is drawn after the eval split, from its own scenes, so its size changes nothing else.
    """
    return WorldConfig(
        seed=0, n_seed_samples=1280, mismatch_fraction=0.5, n_instruct=0, n_textvqa=300, n_mmbench=300,
        n_heldout_textvqa=150, n_heldout_mmbench=150, image_size=64, word_prob=0.5, corruptions=PROXY_CORRUPTIONS,
    )


@dataclass(frozen=True)
class ProxyWorldConfig:
    """The demo world's sizes plus the clean pretraining corpus of the proxy models."""

    world: WorldConfig = field(default_factory=default_world)  # its n_instruct is ignored (see n_instruct)
    n_instruct: int = 400  # images in the fixed stage-2 set, 2-3 benchmark-style turns each
    n_scorer: int = 2400  # clean pairs the scorer, the captioner and the LM pretrain on
    n_calibration: int = 200  # clean pairs kept out of that training, to place the filter threshold
    scorer_word_prob: float = 0.5  # share of scorer images that show a word
    # Every instruction image with a sign gets a turn reading it, as LLaVA-1.5's mix gives OCR-VQA images
    # a reading question; otherwise the word is one of the 2-3 kinds drawn, like any other.
    read_every_sign: bool = False

    def __post_init__(self) -> None:
        if self.n_scorer < 2 or self.n_calibration < 2:
            raise ValueError(f"n_scorer and n_calibration must be >= 2, got {self.n_scorer}, {self.n_calibration}")
        if not 0.0 <= self.scorer_word_prob <= 1.0:
            raise ValueError(f"scorer_word_prob must be in [0, 1], got {self.scorer_word_prob}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ProxyWorldConfig:
        return cls(**{**data, "world": WorldConfig(**data["world"])})


@dataclass(frozen=True)
class ProxyWorldPaths:
    root: Path
    world: WorldPaths
    scorer_jsonl: Path
    calibration_jsonl: Path
    chat_json: Path  # text-only questions and answers about scorer scenes: the LM's instruction corpus
    config: Path

    @classmethod
    def under(cls, root: Path) -> ProxyWorldPaths:
        root = Path(root)
        return cls(root, WorldPaths.under(root / "world"), root / "scorer" / "samples.jsonl",
                   root / "scorer" / "calibration.jsonl", root / "scorer" / "chat.json", root / CONFIG_FILE)

    def load_config(self) -> ProxyWorldConfig:
        return ProxyWorldConfig.from_json(json.loads(self.config.read_text(encoding="utf-8")))

    def training_images(self) -> dict[str, Path]:
        """The image folders of every training split: what no benchmark image may show."""
        return {"seed": self.world.seed_images, "instruct": self.world.instruct_images,
                "scorer and calibration": self.scorer_jsonl.parent / "images"}


def build_proxy_world(root: Path, config: ProxyWorldConfig = ProxyWorldConfig()) -> ProxyWorldPaths:
    """Write the proxy world under ``root`` (replacing an earlier one there)."""
    paths = ProxyWorldPaths.under(root)
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not paths.config.exists():
        raise ValueError(f"root: {root} is not empty and holds no proxy world (no {CONFIG_FILE})")
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(paths.scorer_jsonl.parent, ignore_errors=True)

    def proxy_training(world: WorldPaths, ledger: SceneLedger) -> None:
        exclude = {scene.key() for scene in ledger.splits["seed"]}
        _build_instruct(world, config, exclude, ledger)
        _build_clean_split(paths, config, exclude, ledger)

    build_world(paths.world.root, replace(config.world, n_instruct=0), more_training=proxy_training)
    for textvqa in (paths.world.textvqa, paths.world.heldout_textvqa):
        _upper_case_ocr(textvqa.questions)
    write_json(paths.config, config.to_json())
    return paths


def scene_from_json(data: dict) -> Scene:
    groups = tuple(ObjectGroup(**group) for group in data["objects"])
    return Scene(groups, data["background"], data["word"], data["sign_band"] or "top")


def proxy_ocr_tokens(word: str, rng: random.Random, distractors: tuple[int, int] = OCR_DISTRACTORS) -> list[str]:
    """The demo world's OCR tokens with every distractor in the word's upper case.

    Why: the demo world title-cases its distractors ("Dog" beside "CAT"), so a
    model answers TextVQA by case alone without reading the sign; then every
    recipe scores the same. Same-case distractors make it read the image.
    """
    return [token.upper() for token in ocr_tokens(word, rng, distractors)]


def _upper_case_ocr(questions: Path) -> None:
    """Rewrite a TextVQA question file's OCR tokens as ``proxy_ocr_tokens`` gives them."""
    lines = []
    for line in questions.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        question, tokens = parse_llava_text(record["text"], str(questions))
        record["text"] = build_textvqa_prompt(question, [token.upper() for token in tokens])
        lines.append(json.dumps(record, ensure_ascii=False))
    questions.write_text("\n".join(lines) + "\n", encoding="utf-8")


INSTRUCT_FORMATS = ("short", "choice", "ocr")  # LLaVA-1.5's mix: VQA short answer, A-OKVQA choice, OCR-VQA
SHORT_SUFFIX = TEXTVQA_PROMPT_SUFFIX  # "Answer the question using a single word or phrase."


def instruct_turns(scene: Scene, rng: random.Random, ocr_distractors: tuple[int, int] = OCR_DISTRACTORS,
                   read_every_sign: bool = False) -> list[tuple[str, str]]:
    """2-3 (question, answer) turns in the prompt formats of LLaVA-1.5's instruction mix.

    Why these formats: the benchmarks ask in them (short answer with OCR tokens
    for TextVQA, lettered options for MMBench), and LLaVA-1.5's own instruction
    mix contains them for that reason. A multiple-choice turn is answered with
    the option's text, which MMBench's rule-based extraction maps to its letter.
    """
    kinds = [k for k in (*MMBENCH_KINDS, "word") if QUESTIONS.get(k)(scene, random.Random(0)) is not None]
    count = min(len(kinds), rng.randint(2, 3))
    if read_every_sign and "word" in kinds:  # the reading turn first, then others drawn as usual
        others = [k for k in kinds if k != "word"]
        chosen = ["word", *rng.sample(others, count - 1)]
    else:
        chosen = rng.sample(kinds, count)
    turns = []
    for kind in chosen:
        question = QUESTIONS.get(kind)(scene, rng)
        if kind == "word":
            tokens = proxy_ocr_tokens(question.answer, rng, ocr_distractors)
            text = build_textvqa_prompt(rng.choice(TEXTVQA_QUESTIONS), tokens)
            turns.append((text, question.answer))
        elif rng.choice(INSTRUCT_FORMATS[:2]) == "choice":
            n = rng.randint(2, min(4, len(question.choices)))
            options = rng.sample([c for c in question.choices if c != question.answer], n - 1)
            options.insert(rng.randrange(n), question.answer)
            prompt = build_prompt(question.text, dict(zip("ABCD", options)))
            assert prompt.endswith(ANSWER_SUFFIX)
            turns.append((prompt, question.answer))
        else:
            turns.append((f"{question.text}\n{SHORT_SUFFIX}", question.answer))
    return turns


def _build_instruct(world: WorldPaths, config: ProxyWorldConfig, exclude: set[tuple], ledger: SceneLedger) -> None:
    """The fixed stage-2 set (LLaVA json), on scenes outside the seed set."""
    rng = random.Random(f"bettersynth.proxy:{config.world.seed}:instruct")
    records = []
    for i in range(config.n_instruct):
        scene = _fresh_scene(rng, config.world.word_prob, exclude)
        ledger.add(scene, "instruct")
        sample_id = f"instruct-{i:05d}"
        image = f"images/{sample_id}.png"
        (world.instruct_images).mkdir(parents=True, exist_ok=True)
        (world.instruct_json.parent / image).write_bytes(encode_image(render_scene(scene, config.world.image_size), "png"))
        conversations = []
        for number, (question, answer) in enumerate(instruct_turns(scene, rng, config.world.ocr_distractors,
                                                                 config.read_every_sign)):
            conversations.append({"from": "human", "value": f"<image>\n{question}" if number == 0 else question})
            conversations.append({"from": "gpt", "value": answer})
        records.append({"id": sample_id, "image": image, "conversations": conversations})
    write_json(world.instruct_json, records)


def _fresh_scene(rng: random.Random, word_prob: float, exclude: set[tuple]) -> Scene:
    for _ in range(1000):
        scene = random_scene(rng, word_prob)
        if scene.key() not in exclude:
            return scene
    raise ValueError("cannot draw a scene outside the seed set")


def _build_clean_split(paths: ProxyWorldPaths, config: ProxyWorldConfig, exclude: set[tuple],
                       ledger: SceneLedger) -> None:
    rng = random.Random(f"bettersynth.proxy:{config.world.seed}:scorer")
    folder = paths.scorer_jsonl.parent
    samples: list[Sample] = []
    chats: list[dict[str, str]] = []
    for i in range(config.n_scorer + config.n_calibration):
        scene = _fresh_scene(rng, config.scorer_word_prob, exclude)
        ledger.add(scene, "scorer" if i < config.n_scorer else "calibration")
        image = f"images/clean-{i:05d}.png"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / image).write_bytes(encode_image(render_scene(scene, config.world.image_size), "png"))
        text = caption(scene, rng)
        samples.append(Sample(id=f"clean-{i:05d}", text=caption_text(text), images=[image]))
        if i < config.n_scorer:
            chats.extend(_chats(text, instruct_turns(scene, rng, config.world.ocr_distractors)))
    write_samples(paths.scorer_jsonl, samples[: config.n_scorer])
    write_samples(paths.calibration_jsonl, samples[config.n_scorer:])
    write_json(paths.chat_json, chats)


def _chats(description: str, turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Reading comprehension: the answer is in the description given."""
    return [{"context": description, "question": q, "answer": a} for q, a in turns]


def pretraining_corpus(paths: ProxyWorldPaths) -> tuple[list[str], list[dict[str, str]]]:
    """The clean split's captions and chats: what the proxy's LM pretrains on."""
    captions = [text for _, text in read_pairs(paths.scorer_jsonl)]
    return captions, json.loads(paths.chat_json.read_text(encoding="utf-8"))


def pretraining_texts(captions: list[str], chats: list[dict[str, str]]) -> list[str]:
    """What the proxy's tokenizers learn from: the pretraining corpus, no benchmark text.

    Why: real tokenizers never see the benchmarks; one trained on the eval and
    held-out questions would also let the held-out size change every model.
    """
    return captions + [chat[key] for chat in chats for key in ("context", "question", "answer")]


def read_pairs(jsonl: Path) -> list[tuple[Path, str]]:
    """(image path, caption) of every single-image sample in a Data-Juicer jsonl."""
    pairs = []
    for item in read_jsonl(jsonl):
        if isinstance(item, Sample) and len(item.images) == 1:
            pairs.append((jsonl.parent / item.images[0], sample_caption(item)))
    return pairs


def sample_caption(sample: Sample) -> str:
    """A sample's text without its image tokens and chunk ends: the caption a scorer or the audit reads."""
    return " ".join(text for text, _ in sample.chunks()).strip()
