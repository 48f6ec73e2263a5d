"""Streamed averaging: arithmetic, buffers, refusals, tied weights, sharding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from bettersynth.soup import average_checkpoints, copy_checkpoint

torch.set_num_threads(1)


def reference_average(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """In-memory average: fp32 accumulation, cast back to the stored dtype."""
    total = sum(weights)
    out = {}
    for name, first in states[0].items():
        acc = sum(w / total * s[name].float() for w, s in zip(weights, states))
        out[name] = acc.to(first.dtype)
    return out


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        # one rounding of the stored dtype apart at most: fused w*x+acc can land a tie on the other side
        rtol = max(1e-6, torch.finfo(want[name].dtype).eps) if want[name].dtype.is_floating_point else 0
        assert torch.allclose(got[name].float(), want[name].float(), rtol=rtol, atol=1e-7), name


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_soup_uniform_matches_in_memory_average(llamas, load_state, tmp_path):
    paths = [llamas[f"fp32_{seed}"] for seed in range(3)]
    out = average_checkpoints(paths, None, tmp_path / "soup")
    states = [load_state(p) for p in paths]
    got = load_state(out)
    assert_same_tensors(got, reference_average(states, [1, 1, 1]))
    # a real average: not equal to any ingredient
    name = "model.layers.0.mlp.up_proj.weight"
    assert not any(torch.equal(got[name], s[name]) for s in states)
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    assert leftovers(tmp_path) == []


def test_soup_weighted_normalises_weights(llamas, load_state, tmp_path):
    paths = [llamas["fp32_0"], llamas["fp32_1"], llamas["fp32_2"]]
    out = average_checkpoints(paths, [1.0, 2.0, 5.0], tmp_path / "soup")
    states = [load_state(p) for p in paths]
    assert_same_tensors(load_state(out), reference_average(states, [1 / 8, 2 / 8, 5 / 8]))


def test_soup_zero_weight_ingredient_is_left_out(llamas, load_state, tmp_path):
    out = average_checkpoints([llamas["fp32_0"], llamas["fp32_1"]], [3.0, 0.0], tmp_path / "soup")
    want = load_state(llamas["fp32_0"])
    got = load_state(out)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_soup_bf16_accumulates_in_fp32(llamas, load_state, tmp_path):
    paths = [llamas["bf16_0"], llamas["bf16_1"]]
    out = average_checkpoints(paths, [1.0, 3.0], tmp_path / "soup")
    states = [load_state(p) for p in paths]
    got = load_state(out)
    want = reference_average(states, [1.0, 3.0])
    for name in want:
        assert got[name].dtype == torch.bfloat16
        assert torch.equal(got[name], want[name]), name
    # bf16 arithmetic would round 0.25 * a and 0.75 * b before adding; fp32 accumulation differs somewhere
    name = "model.layers.0.mlp.up_proj.weight"
    in_bf16 = states[0][name] * 0.25 + states[1][name] * 0.75
    assert not torch.equal(in_bf16, got[name])


def test_soup_copies_non_weight_files_from_first(llamas, tmp_path):
    out = average_checkpoints([llamas["fp32_0"], llamas["fp32_1"]], None, tmp_path / "soup")
    for name in ("config.json", "generation_config.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (llamas["fp32_0"] / name).read_bytes(), name
    assert not (out / "optimizer.pt").exists()


def test_soup_tied_weights_stay_tied(llamas, load_state, tmp_path):
    from transformers import LlamaForCausalLM

    paths = [llamas["fp32_0"], llamas["fp32_1"]]
    out = average_checkpoints(paths, None, tmp_path / "soup")
    assert load_state(out).keys() == load_state(paths[0]).keys()
    assert "lm_head.weight" not in load_state(out)
    model = LlamaForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    want = (load_state(paths[0])["model.embed_tokens.weight"] + load_state(paths[1])["model.embed_tokens.weight"]) / 2
    assert torch.allclose(model.lm_head.weight, want, rtol=1e-6, atol=1e-7)


def test_soup_sharded_round_trip(llamas, load_state, tmp_path):
    from transformers import LlamaForCausalLM

    sharded = [llamas["sharded_1"], llamas["sharded_2"]]
    assert (sharded[0] / "model.safetensors.index.json").is_file()
    max_bytes = 10_000
    out = average_checkpoints(sharded, None, tmp_path / "soup", max_shard_bytes=max_bytes)
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    for shard in shards:
        with safe_open(shard, "pt") as handle:
            names = list(handle.keys())
        assert all(index["weight_map"][n] == shard.name for n in names)
        stored = sum(load_state_one(shard, n).nbytes for n in names)
        assert stored <= max_bytes or len(names) == 1
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in load_state(out).values())
    want = reference_average([load_state(p) for p in sharded], [1, 1])
    assert_same_tensors(load_state(out), want)
    model = LlamaForCausalLM.from_pretrained(out)
    assert torch.equal(model.model.norm.weight, want["model.norm.weight"])
    # sharded and single-file ingredients mix, and a big limit gives a single file
    single = average_checkpoints([llamas["sharded_1"], llamas["fp32_2"]], None, tmp_path / "single")
    assert sorted(p.name for p in single.glob("*.safetensors")) == ["model.safetensors"]
    assert_same_tensors(load_state(single), want)


def load_state_one(shard: Path, name: str) -> torch.Tensor:
    with safe_open(shard, "pt") as handle:
        return handle.get_tensor(name)


def test_soup_int_buffers_are_copied(handmade, load_state, tmp_path):
    # values past 2**24 would not survive a round trip through fp32: copying is the only way to keep them
    ids = (torch.arange(12, dtype=torch.int64) + 2**40 + 1).reshape(1, 12)
    a = handmade("a", {"w": torch.tensor([1.0, 2.0]), "position_ids": ids, "mask": torch.tensor([True, False])})
    b = handmade("b", {"w": torch.tensor([3.0, 6.0]), "position_ids": ids.clone(), "mask": torch.tensor([True, False])})
    got = load_state(average_checkpoints([a, b], None, tmp_path / "soup"))
    assert got["position_ids"].dtype == torch.int64 and torch.equal(got["position_ids"], ids)
    assert torch.equal(got["mask"], torch.tensor([True, False]))
    assert torch.equal(got["w"], torch.tensor([2.0, 4.0]))


def test_soup_differing_int_buffer_refused_without_output(handmade, tmp_path):
    ids = torch.arange(12, dtype=torch.int64)
    a = handmade("a", {"w": torch.ones(2), "position_ids": ids})
    b = handmade("b", {"w": torch.ones(2), "position_ids": ids.flip(0)})
    with pytest.raises(ValueError, match="'position_ids'"):
        average_checkpoints([a, b], None, tmp_path / "soup")
    assert not (tmp_path / "soup").exists()
    assert leftovers(tmp_path) == []


def test_soup_shape_mismatch_names_first_key_and_checkpoint(llamas, tmp_path):
    wide = llamas["wide"]
    with pytest.raises(ValueError) as caught:
        average_checkpoints([llamas["fp32_0"], wide], None, tmp_path / "soup")
    message = str(caught.value)
    # sorted first offending key: layer 0's down_proj (gate/up come after it alphabetically)
    assert "'model.layers.0.mlp.down_proj.weight'" in message and str(wide) in message
    assert not (tmp_path / "soup").exists() and leftovers(tmp_path) == []


def test_soup_key_set_mismatch_names_first_key(handmade, tmp_path):
    a = handmade("a", {"w": torch.ones(2), "b": torch.ones(2)})
    b = handmade("b_extra", {"w": torch.ones(2), "b": torch.ones(2), "a_extra": torch.ones(1), "z_extra": torch.ones(1)})
    with pytest.raises(ValueError, match=r"checkpoint .*b_extra has tensor 'a_extra'"):
        average_checkpoints([a, b], None, tmp_path / "soup")
    with pytest.raises(ValueError, match=r"checkpoint .*[/\\]a lacks tensor 'a_extra'"):
        average_checkpoints([b, a], None, tmp_path / "soup")
    c = handmade("c", {"w": torch.ones(2, dtype=torch.float16), "b": torch.ones(2)})
    with pytest.raises(ValueError, match="'w' has dtype"):
        average_checkpoints([a, c], None, tmp_path / "soup")
    assert not (tmp_path / "soup").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("weights, field", [([1.0, -1.0], "weights"), ([0.0, 0.0], "weights"), ([1.0], "weights")])
def test_soup_bad_weights_refused(handmade, tmp_path, weights, field):
    a = handmade("a", {"w": torch.ones(2)})
    b = handmade("b", {"w": torch.ones(2)})
    with pytest.raises(ValueError, match=field):
        average_checkpoints([a, b], weights, tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_soup_refuses_non_empty_out_dir_and_accepts_empty(handmade, tmp_path):
    a = handmade("a", {"w": torch.ones(2)})
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="out_dir"):
        average_checkpoints([a], None, taken)
    assert (taken / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (average_checkpoints([a], None, empty) / "model.safetensors").is_file()


def test_soup_copy_checkpoint_is_byte_identical(llamas, tmp_path):
    out = copy_checkpoint(llamas["sharded_1"], tmp_path / "copy")
    for src in llamas["sharded_1"].iterdir():
        assert (out / src.name).read_bytes() == src.read_bytes()


def test_soup_odd_tensors_round_trip(handmade, load_state, tmp_path):
    def tensors(seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return {
            "scalar": torch.randn((), generator=gen).half(),
            "empty": torch.zeros(0, 3),
            "double": torch.randn(5, generator=gen, dtype=torch.float64),
            "bytes": torch.arange(7, dtype=torch.uint8),
            "odd": torch.randn(3, 5, 7, generator=gen).bfloat16(),
        }

    states = [tensors(0), tensors(1)]
    paths = [handmade("a", states[0]), handmade("b", states[1])]
    got = load_state(average_checkpoints(paths, [1.0, 2.0], tmp_path / "soup", max_shard_bytes=64))
    assert got["double"].dtype == torch.float64
    # accumulated in fp64, not squeezed through fp32
    want = states[0]["double"] / 3 + states[1]["double"] * 2 / 3
    assert torch.allclose(got["double"], want, rtol=1e-14, atol=0)
    assert_same_tensors(got, reference_average(states, [1.0, 2.0]))


def test_soup_pieces_smaller_than_tensors_give_the_same_soup(llamas, handmade, load_state, tmp_path, monkeypatch):
    # tensors cut into pieces of 5 elements, across misaligned offsets (uint8 of 7 before bf16) and dtypes
    import bettersynth.soup.average as average

    paths = [llamas["fp32_0"], llamas["fp32_1"]]
    whole = load_state(average_checkpoints(paths, [1.0, 3.0], tmp_path / "whole"))
    monkeypatch.setattr(average, "CHUNK_ELEMENTS", 5)
    pieces = load_state(average_checkpoints(paths, [1.0, 3.0], tmp_path / "pieces"))
    assert all(torch.equal(pieces[k], whole[k]) for k in whole)
    odd = [{"bytes": torch.arange(7, dtype=torch.uint8), "odd": torch.randn(3, 7, generator=torch.Generator().manual_seed(s))
            .bfloat16()} for s in (0, 1)]
    got = load_state(average_checkpoints([handmade("a", odd[0]), handmade("b", odd[1])], None, tmp_path / "odd"))
    assert_same_tensors(got, reference_average(odd, [1, 1]))


def test_soup_truncated_ingredient_named_without_output(handmade, tmp_path):
    good = handmade("a", {"w": torch.ones(64)})
    bad = handmade("b", {"w": torch.zeros(64)})
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    with pytest.raises(ValueError, match=r"checkpoint \S*b: model.safetensors is not a complete safetensors file"):
        average_checkpoints([good, bad], None, tmp_path / "soup")
    assert not (tmp_path / "soup").exists() and leftovers(tmp_path) == []


def test_soup_writer_refuses_parts_that_do_not_add_up(tmp_path):
    from bettersynth.soup.checkpoint import TensorInfo
    from bettersynth.soup.writer import ShardWriter

    layout = {"w": TensorInfo("model.safetensors", (2, 3), torch.float32)}
    with pytest.raises(ValueError, match=r"'w': wrote 16 bytes, planned 24"):
        with ShardWriter(tmp_path / "model.safetensors", layout) as writer:
            writer.write_parts("w", iter([torch.zeros(2), torch.ones(2)]))
    with ShardWriter(tmp_path / "ok.safetensors", layout) as writer:
        writer.write_parts("w", iter([torch.zeros(4), torch.ones(2)]))  # pieces of any size, in order
    with safe_open(tmp_path / "ok.safetensors", "pt") as handle:
        assert torch.equal(handle.get_tensor("w"), torch.tensor([[0.0, 0, 0], [0, 1, 1]]))
