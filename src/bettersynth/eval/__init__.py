"""Benchmarks (TextVQA, MMBench) scored exactly as LLaVA/MGM report them.

Importing the package registers every benchmark in ``BENCHMARKS``.

Example::

    from bettersynth.eval import BENCHMARKS, evaluate
    bench = BENCHMARKS.get("textvqa")(questions, annotations, image_dir)
    evaluate("checkpoints/final", bench).write("out/textvqa")
"""

from bettersynth.eval.benchmark import BENCHMARKS, Benchmark, EvalItem, EvalResult, merge_results
from bettersynth.eval.choice import extract_choice
from bettersynth.eval.mmbench import MMBench
from bettersynth.eval.normalize import normalize_answer
from bettersynth.eval.shard import shard_question_ids
from bettersynth.eval.textvqa import TextVQA, vqa_accuracy

__all__ = [
    "BENCHMARKS", "Benchmark", "CaptionLoss", "EvalItem", "EvalResult", "MMBench", "TextVQA",
    "evaluate", "heldout_caption_loss", "load_caption_records",
    "extract_choice", "generate_answers", "merge_results", "normalize_answer", "shard_question_ids",
    "vqa_accuracy",
]


def __getattr__(name: str):
    # torch and transformers load only when generation is asked for: scoring stays light.
    if name in ("evaluate", "generate_answers"):
        from bettersynth.eval import generate

        return getattr(generate, name)
    if name in ("CaptionLoss", "heldout_caption_loss", "load_caption_records"):
        import importlib

        return getattr(importlib.import_module("bettersynth.eval.caption_loss"), name)
    raise AttributeError(name)
