"""Train independent proxy models at the same time, each in a process of its own, with the same numbers.

Why: the scorer and the LM do not depend on each other, and torch uses its
intra-op threads poorly on models this small (2 threads ran 1.5 x one). Each
job runs in a spawned process with this process's torch thread count, so it
computes exactly what it would have computed here (same losses, bit for bit);
side by side on 2 cores they took 0.82 x the time of one after the other.
OpenMP threads wait passively: spinning, two oversubscribed jobs ran 1.8 x
slower instead.

Example::

    scorer, lm = side_by_side([(train_scorer, (jsonl, vocab, out / "clip")),
                               (train_language_model, (captions, chats, vocab, out / "lm"))])
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bettersynth.local_run import environment

Job = tuple[Callable[..., Any], tuple[Any, ...]]


def side_by_side(jobs: Sequence[Job]) -> list[Any]:
    """Run every ``(function, args)`` at once, each in a fresh process; their results, in order.

    An error in a job is raised here, after every job has ended.
    """
    import torch

    threads, level = torch.get_num_threads(), logging.getLogger().level
    with environment({"OMP_WAIT_POLICY": "passive"}), ProcessPoolExecutor(
            max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_call, threads, level, function, args) for function, args in jobs]
        return [future.result() for future in futures]


def _call(threads: int, level: int, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """In the job's process: this caller's thread count and log level, then the job."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return function(*args)
