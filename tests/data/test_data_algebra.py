"""Dataset algebra on a small generated world: counts, ratios, provenance, content addressing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bettersynth.core.sample import Sample, caption_text
from bettersynth.data.algebra import Part, cap, load_variant, mix, repeat, replace
from bettersynth.data.jsonl import write_samples


@pytest.fixture()
def seed_dir(small_world) -> Path:
    return small_world.seed_jsonl.parent


def _renamed(seed_dir: Path, out: Path, prefix: str) -> Path:
    """A copy of the seed variant whose ids carry ``prefix`` (a second source for mixing)."""
    samples = [Sample(prefix + s.id, s.text, list(s.images)) for s in load_variant(seed_dir)]
    for sample in samples:
        for rel in sample.images:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes((seed_dir / rel).read_bytes())
    write_samples(out / "samples.jsonl", samples)
    return out


def test_mix_draws_by_ratio_and_records_the_source(seed_dir, tmp_path):
    other = _renamed(seed_dir, tmp_path / "other", "b-")
    report = mix([Part(seed_dir, 2), Part(other, 1)], tmp_path / "mixed", total=15, seed=3)
    samples = load_variant(tmp_path / "mixed")
    assert report.n_out == len(samples) == 15
    assert report.sources == {str(seed_dir): 10, str(other): 5}
    assert sum(s.id.startswith("b-") for s in samples) == 5
    assert all(s.meta["provenance"][-1]["op"] == "mix" for s in samples)
    again = mix([Part(seed_dir, 2), Part(other, 1)], tmp_path / "again", total=15, seed=3)
    assert (tmp_path / "mixed" / "samples.jsonl").read_bytes() == (tmp_path / "again" / "samples.jsonl").read_bytes()
    assert again.sources == report.sources


def test_mix_refuses_to_oversample(seed_dir, tmp_path):
    with pytest.raises(ValueError, match="holds 24 samples but ratio"):
        mix([Part(seed_dir, 1)], tmp_path / "out", total=100)


def test_repeat_duplicates_a_subset_with_provenance(seed_dir, tmp_path):
    ids = {s.id for s in load_variant(seed_dir)[:3]}
    report = repeat(seed_dir, tmp_path / "rep", times=3, ids=ids)
    samples = load_variant(tmp_path / "rep")
    assert report.added == 6 and report.n_out == 24 + 6
    copies = [s for s in samples if "#rep" in s.id]
    assert {s.meta["provenance"][-1]["source_id"] for s in copies} == ids
    # images are stored once, named by their content
    files = list((tmp_path / "rep" / "images").iterdir())
    assert len(files) == len({s.images[0] for s in samples}) == 24
    for f in files:
        assert f.stem == hashlib.sha256(f.read_bytes()).hexdigest()[:32]


def test_cap_is_the_seeded_challenge_subsample(seed_dir, tmp_path):
    first = cap(seed_dir, tmp_path / "a", n=10)
    cap(seed_dir, tmp_path / "b", n=10)
    assert first.n_out == 10 and first.removed == 14 and first.params["seed"] == 1024
    assert (tmp_path / "a" / "samples.jsonl").read_bytes() == (tmp_path / "b" / "samples.jsonl").read_bytes()
    assert cap(seed_dir, tmp_path / "c", n=100).n_out == 24


def test_replace_swaps_by_source_id(seed_dir, tmp_path):
    base = load_variant(seed_dir)
    target = base[5]
    synth = tmp_path / "synth"
    (synth / "images").mkdir(parents=True)
    (synth / "images" / "new.png").write_bytes((seed_dir / target.images[0]).read_bytes())
    write_samples(synth / "samples.jsonl", [
        Sample("x1", caption_text("a re-synthesised caption"), ["images/new.png"], {"source_id": target.id})
    ])
    report = replace(seed_dir, synth, tmp_path / "out")
    samples = {s.id: s for s in load_variant(tmp_path / "out")}
    assert report.replaced == 1 and report.n_out == 24
    assert "re-synthesised" in samples[target.id].text
    assert samples[target.id].meta["provenance"][-1] == {"op": "replace", "source_id": target.id, "source": str(synth)}

    write_samples(synth / "samples.jsonl", [Sample("zz", caption_text("orphan"), ["images/new.png"], {})])
    with pytest.raises(ValueError, match="matches no sample"):
        replace(seed_dir, synth, tmp_path / "out2")


def test_outputs_refuse_a_non_empty_directory(seed_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        cap(seed_dir, tmp_path / "busy", n=3)
    assert (tmp_path / "busy" / "x").read_text() == "keep me"


def test_cli_caps_and_versions_with_lineage(seed_dir, tmp_path, capsys):
    from bettersynth.cli.main import main
    from bettersynth.versioning.dvc import list_variants

    workspace = tmp_path / "ws"
    out = tmp_path / "capped"
    assert main(["algebra", "cap", str(seed_dir), "--n", "5", "--out", str(out), "--version", "cap5", "--workspace", str(workspace)]) == 0
    (variant,) = list_variants(workspace)
    assert variant["name"] == "cap5" and variant["meta"]["op"] == "cap" and variant["meta"]["removed"] == 19
    assert variant["meta"]["parents"][0]["path"] == str(seed_dir)
