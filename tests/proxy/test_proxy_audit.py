"""The answer-key audit recognises every truthful caption and every corrupted one of a world."""

from __future__ import annotations

import json

from bettersynth.core.sample import Sample, caption_text
from bettersynth.data.jsonl import read_jsonl, write_samples
from bettersynth.data.provenance import with_provenance
from bettersynth_demo.proxy.audit import is_truthful, label_report


def test_truthful_exactly_when_not_corrupted(proxy) -> None:
    labels = json.loads(proxy.world.labels.read_text())
    for sample in read_jsonl(proxy.world.seed_jsonl):
        text = " ".join(chunk for chunk, _ in sample.chunks())
        assert is_truthful(text, labels[sample.id]["truth"]) != labels[sample.id]["corrupted"], text


def test_label_report_counts_corrupted_originals_and_truthful_recaptions(proxy, tmp_path) -> None:
    labels = json.loads(proxy.world.labels.read_text())
    seeds = [s for s in read_jsonl(proxy.world.seed_jsonl)]
    clean = next(s for s in seeds if not labels[s.id]["corrupted"])
    bad = next(s for s in seeds if labels[s.id]["corrupted"])
    truthful_text = " ".join(chunk for chunk, _ in clean.chunks())
    recaptions = [  # a truthful re-caption of the corrupted sample's source would need its scene: reuse clean's
        Sample(f"{clean.id}#cap0", caption_text(truthful_text), clean.images,
               with_provenance({}, op="image_captioning_mapper", source_id=clean.id)),
        Sample(f"{clean.id}#cap1", caption_text("a picture of nothing"), clean.images,
               with_provenance({}, op="image_captioning_mapper", source_id=clean.id)),
    ]
    write_samples(tmp_path / "samples.jsonl", [clean, bad, *recaptions])
    report = label_report(proxy, tmp_path)
    assert report == {"samples": 4, "corrupted": 1, "recaptioned": 2, "recaptioned_truthful": 1, "truthful": 2}
    only = label_report(proxy, tmp_path, trained_ids={clean.id, bad.id})
    assert only["samples"] == 2 and only["recaptioned"] == 0
