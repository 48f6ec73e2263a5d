"""The answer-key audit: how clean each trained variant really was.

Why: the comparison table claims "cleaner data → better model"; this is the
evidence for "cleaner". It reads ``world_labels.json`` after the pipeline runs
(never during them, see ``pipeline_run.sealed``) and checks every caption of a
variant against the scene its image shows: a kept seed caption by its label, a
re-caption by parsing what it claims (objects with colour, shape, count and
position, and the sign's word) and comparing that with the truth.

Example::

    label_report(paths, workspace / "data" / "variants" / "proxy-similarity")
    # {"samples": 640, "corrupted": 71, "recaptioned": 0, "recaptioned_truthful": 0}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import read_jsonl
from bettersynth.data.provenance import source_id
from bettersynth_demo.captions import CORRUPTIONS, POSITION_PHRASES
from bettersynth_demo.proxy.negatives import COUNTS, OBJECT_PHRASE, WORD_PHRASE
from bettersynth_demo.proxy.world import (
    ProxyWorldPaths,
    sample_caption,
    scene_from_json,
)

_PLACED = re.compile(OBJECT_PHRASE.pattern + rf" ({'|'.join(map(re.escape, POSITION_PHRASES.values()))})")
_POSITION_OF = {phrase: position for position, phrase in POSITION_PHRASES.items()}


def claims(text: str) -> tuple[frozenset[tuple[str, str, int, str]], str | None]:
    """The (colour, shape, count, position) groups and the sign's word a caption states."""
    groups = frozenset((m[2], m[3], COUNTS[m[1]], _POSITION_OF[m[4]]) for m in _PLACED.finditer(text))
    words = WORD_PHRASE.findall(text)
    return groups, (words[0] if words else None)


def is_truthful(text: str, truth: dict[str, Any]) -> bool:
    """True when the caption names exactly the scene's groups (with their positions) and its word."""
    scene = scene_from_json(truth)
    groups = frozenset((g.colour, g.shape, g.count, g.position) for g in scene.objects)
    return claims(text) == (groups, scene.word)


def label_report(world: ProxyWorldPaths, variant_dir: Path, trained_ids: set[str] | None = None) -> dict[str, int]:
    """Samples of a variant (only ``trained_ids`` when given), how many still carry a corrupted seed
    caption, how many are re-captions and how many of those are truthful."""
    labels = json.loads(world.world.labels.read_text(encoding="utf-8"))
    samples = [s for s in read_jsonl(Path(variant_dir) / "samples.jsonl")
               if isinstance(s, Sample) and (trained_ids is None or s.id in trained_ids)]
    originals = [s for s in samples if source_id(s) is None]
    recaptioned = [s for s in samples if source_id(s) is not None]
    truthful = sum(is_truthful(sample_caption(s), labels[str(source_id(s))]["truth"]) for s in recaptioned)
    corrupted = sum(labels[s.id]["corrupted"] for s in originals)
    return {"samples": len(samples), "corrupted": corrupted, "recaptioned": len(recaptioned),
            "recaptioned_truthful": truthful, "truthful": len(originals) - corrupted + truthful}


def filter_recall(world: ProxyWorldPaths, variant_dir: Path) -> dict[str, list[int]]:
    """Per corruption kind, [removed, total]: seed samples of that kind the recipe's filters dropped.

    A seed sample survived the filters when it is in the variant itself or as the
    source of a re-caption (the caption step replaces the samples it rewrites).
    """
    labels = json.loads(world.world.labels.read_text(encoding="utf-8"))
    kept = set()
    for sample in read_jsonl(Path(variant_dir) / "samples.jsonl"):
        if isinstance(sample, Sample):
            kept.add(str(source_id(sample)) if source_id(sample) is not None else sample.id)
    recall: dict[str, list[int]] = {}
    for sample_id, label in labels.items():
        if label["corrupted"]:
            counts = recall.setdefault(label["kind"], [0, 0])
            counts[0] += sample_id not in kept
            counts[1] += 1
    return dict(sorted(recall.items()))


def scorer_auc(world: ProxyWorldPaths, model_dir: Path) -> dict[str, float]:
    """ROC AUC of the scorer's similarity, truthful seed captions over corrupted ones: overall and per kind."""
    from bettersynth_demo.proxy.scorer import pair_similarities, roc_auc
    from bettersynth_demo.proxy.world import read_pairs

    labels = json.loads(world.world.labels.read_text(encoding="utf-8"))
    ids = [s.id for s in read_jsonl(world.world.seed_jsonl) if isinstance(s, Sample)]
    scores = dict(zip(ids, pair_similarities(Path(model_dir), read_pairs(world.world.seed_jsonl)), strict=True))
    truthful = [scores[i] for i in ids if not labels[i]["corrupted"]]
    result = {"overall": roc_auc(truthful, [scores[i] for i in ids if labels[i]["corrupted"]])}
    for kind in CORRUPTIONS.names():
        negatives = [scores[i] for i in ids if labels[i]["kind"] == kind]
        if negatives:
            result[kind] = roc_auc(truthful, negatives)
    return result
