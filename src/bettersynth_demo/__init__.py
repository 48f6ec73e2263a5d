"""An offline, seeded demo world: generated images, captions and benchmarks in the real formats.

Why: the quickstart and the tests need data that looks like the real thing (Data-Juicer
jsonl, LLaVA json, TextVQA, MMBench) and has known ground truth, without any download.
"""
