"""The proxy world: clean split disjoint from the seed set, answer key kept apart, benchmark-style instructions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bettersynth.eval.mmbench import ANSWER_SUFFIX
from bettersynth.eval.textvqa import OCR_PREFIX, parse_llava_text
from bettersynth_demo.benchmarks import TEXTVQA_PROMPT_SUFFIX
from bettersynth_demo.proxy.base_model import (
    PROXY_CHAT_TEMPLATE,
    LMConfig,
    is_reading_chat,
    lm_documents,
)
from bettersynth_demo.proxy.world import (
    ProxyWorldPaths,
    build_proxy_world,
    pretraining_corpus,
    pretraining_texts,
    read_pairs,
    scene_from_json,
)
from bettersynth_demo.tokenizers import train_lm_tokenizer


def _keys_of(paths: ProxyWorldPaths) -> set[tuple]:
    labels = json.loads(paths.world.labels.read_text())
    return {scene_from_json(label["truth"]).key() for label in labels.values()}


def test_proxy_clean_split_sizes_and_disjoint_from_seed(proxy: ProxyWorldPaths) -> None:
    assert len(read_pairs(proxy.scorer_jsonl)) == 80 and len(read_pairs(proxy.calibration_jsonl)) == 10
    seed_captions = {text for _, text in read_pairs(proxy.world.seed_jsonl)}
    seed_images = {hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in read_pairs(proxy.world.seed_jsonl)}
    clean = read_pairs(proxy.scorer_jsonl) + read_pairs(proxy.calibration_jsonl)
    # A scene outside the seed set renders to an image no seed sample has.
    assert not seed_images & {hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in clean}
    assert len(_keys_of(proxy)) == 60 and seed_captions


def test_proxy_answer_key_stays_out_of_what_the_pipeline_reads(proxy: ProxyWorldPaths) -> None:
    readable = [proxy.world.seed_jsonl, proxy.world.instruct_json, proxy.scorer_jsonl, proxy.chat_json]
    for path in readable:
        text = path.read_text()
        for needle in ("corrupt", "wrong_", "unrelated", "too_short", "truth"):
            assert needle not in text, (path, needle)
    assert all(json.loads(line).keys() == {"id", "text", "images"}
               for line in proxy.world.seed_jsonl.read_text().splitlines())
    assert not any(p.name == "world_labels.json" for p in proxy.world.seed_jsonl.parent.rglob("*"))


def test_proxy_instructions_use_the_benchmark_prompt_formats(proxy: ProxyWorldPaths) -> None:
    records = json.loads(proxy.world.instruct_json.read_text())
    assert len(records) == 20
    questions = [turn["value"] for r in records for turn in r["conversations"] if turn["from"] == "human"]
    assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in records)
    assert any(q.endswith(ANSWER_SUFFIX) for q in questions)  # MMBench-style lettered options
    assert any("Reference OCR token:" in q for q in questions)  # TextVQA-style OCR prompt
    assert all(q.endswith((ANSWER_SUFFIX, TEXTVQA_PROMPT_SUFFIX)) for q in questions)
    for record in records:
        assert (proxy.world.instruct_json.parent / record["image"]).is_file()


def test_proxy_chat_corpus_answers_from_its_description(proxy: ProxyWorldPaths) -> None:
    chats = json.loads(proxy.chat_json.read_text())
    assert chats and all(set(c) == {"context", "question", "answer"} for c in chats)
    captions = {text for _, text in read_pairs(proxy.scorer_jsonl)}
    assert {c["context"] for c in chats} <= captions


def test_proxy_lm_reads_every_reading_chat_reading_repeats_times(proxy: ProxyWorldPaths) -> None:
    """Reading chats (OCR-token questions) are upweighted in the LM's documents; nothing else is."""
    captions, chats = pretraining_corpus(proxy)
    reading = [c for c in chats if is_reading_chat(c)]
    assert reading and all(parse_llava_text(c["question"], "chat")[1] for c in reading)
    assert all(OCR_PREFIX not in c["question"] for c in chats if not is_reading_chat(c))
    tokenizer = train_lm_tokenizer(pretraining_texts(captions, chats), vocab_size=300)
    tokenizer.chat_template = PROXY_CHAT_TEMPLATE
    once, four = (lm_documents(captions, chats, tokenizer, repeats) for repeats in (1, 4))
    assert len(once) == 2 * len(captions) + len(chats)
    assert len(four) == len(once) + 3 * len(reading)
    word = reading[0]["answer"]
    assert sum(word in d for d in four) - sum(word in d for d in once) == 3 * sum(
        word in (c["context"] + c["question"] + c["answer"]) for c in reading)
    with pytest.raises(ValueError, match="reading_repeats"):
        LMConfig(reading_repeats=0)


def test_proxy_tokenizer_corpus_is_the_pretraining_text_alone(tmp_path: Path, proxy: ProxyWorldPaths,
                                                             tiny_config) -> None:
    """The tokenizers learn from clean captions and chats only: more benchmark questions change nothing."""
    corpus = pretraining_texts(*pretraining_corpus(proxy))
    assert set(corpus) >= {text for _, text in read_pairs(proxy.scorer_jsonl)}
    more_heldout = replace(tiny_config, world=replace(tiny_config.world, n_heldout_textvqa=6, n_heldout_mmbench=6))
    assert pretraining_texts(*pretraining_corpus(build_proxy_world(tmp_path / "more", more_heldout))) == corpus


def test_proxy_world_is_deterministic_and_rebuilds_in_place(tmp_path: Path, proxy: ProxyWorldPaths, tiny_config) -> None:
    again = build_proxy_world(tmp_path / "again", tiny_config)
    def digest(paths: ProxyWorldPaths) -> dict[str, str]:
        return {str(p.relative_to(paths.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(paths.root.rglob("*")) if p.is_file()}
    assert digest(again) == digest(proxy)
    build_proxy_world(tmp_path / "again", tiny_config)  # a second build over the first
    assert digest(again) == digest(proxy)
    assert again.load_config() == tiny_config


def test_proxy_refuses_a_foreign_folder(tmp_path: Path, tiny_config) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no proxy world"):
        build_proxy_world(tmp_path, tiny_config)


def test_proxy_ocr_distractors_share_the_words_case(proxy: ProxyWorldPaths) -> None:
    """The demo world title-cases distractors ("Dog" beside "CAT"); here every token is upper case."""
    for textvqa in (proxy.world.textvqa, proxy.world.heldout_textvqa):
        for line in textvqa.questions.read_text().splitlines():
            _, tokens = parse_llava_text(json.loads(line)["text"], "test")
            assert tokens and all(token == token.upper() for token in tokens)
    questions = [turn["value"] for r in json.loads(proxy.world.instruct_json.read_text())
                 for turn in r["conversations"] if turn["from"] == "human" and OCR_PREFIX in turn["value"]]
    assert questions
    for question in questions:
        _, tokens = parse_llava_text(question.removeprefix("<image>\n"), "test")
        assert all(token == token.upper() for token in tokens)


@pytest.mark.parametrize("arch", ["llava", "mgm"])
def test_proxy_base_model_takes_either_architecture(arch, tmp_path):
    """``bettersynth proxy --arch``: the base is built from the scorer's tower and the LM, LLaVA or Mini-Gemini."""
    from bettersynth.vlm import load_vlm, vlm_class
    from bettersynth_demo.models import build_tiny_causal_lm, build_tiny_clip
    from bettersynth_demo.proxy.experiment import SCORER, build_base

    texts = ["a red circle on the left", "what colour is the square", "blue"] * 20
    build_tiny_clip(tmp_path / SCORER, texts)
    build_tiny_causal_lm(tmp_path / "lm", texts)
    base = build_base(arch, tmp_path, seed=0)
    assert base == tmp_path / f"{arch}-base"
    vlm = load_vlm(base)
    assert type(vlm.model) is vlm_class(base) and vlm.model.config.model_type == {"llava": "llava", "mgm": "bettersynth_mgm"}[arch]
    if arch == "mgm":
        assert vlm.model.config.aux_tower["image_size"] == 2 * vlm.model.config.vision_config.image_size


def test_read_every_sign_gives_each_signed_instruction_image_its_reading_turn_first(tmp_path, tiny_config) -> None:
    from dataclasses import replace

    def reading(config) -> list[tuple[str | None, bool, str]]:
        paths = build_proxy_world(tmp_path / str(config.read_every_sign), config)
        scenes = json.loads(paths.world.scene_index.read_text())["instruct"]
        records = json.loads(paths.world.instruct_json.read_text())
        return [(scene["word"], "Reference OCR token: " in r["conversations"][0]["value"], r["conversations"][1]["value"])
                for scene, r in zip(scenes, records, strict=True)]

    shipped = reading(replace(tiny_config, n_instruct=40, read_every_sign=True))
    assert any(word for word, _, _ in shipped) and any(not word for word, _, _ in shipped)
    assert all(first == bool(word) and (answer == word or not word) for word, first, answer in shipped)
    drawn = reading(replace(tiny_config, n_instruct=40))  # the default: the word is one kind among the rest
    assert any(word and not first for word, first, _ in drawn)
