"""Operator bases: filters score then decide, mappers transform.

Why: a filter's score is data (it lands in ``sample.stats`` and in reports), so
scoring (``compute_stats``) is kept apart from deciding (``keep``), and the
base class alone runs the two in order. Bounds are closed (min <= s <= max),
with Data-Juicer's option names, so Data-Juicer recipes read unchanged.

Example::

    class WordsNumFilter(Filter):
        name = "words_num_filter"
        stat_key = "num_words"
        min_field, max_field = "min_num", "max_num"

        class Config(OpConfig):
            min_num: int = 10  # fewest words kept
            max_num: int = sys.maxsize  # most words kept

        def compute_stats(self, batch): return [count(s.text) for s in batch]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bettersynth.data.sample import Sample
from bettersynth.engine import Engine, Failure
from bettersynth.registry import Registry


class OpConfig(BaseModel):
    """Base of every operator's settings; unknown fields are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class OpContext:
    """What an operator needs from the run: where data and models live, and the engine."""

    engine: Engine = field(default_factory=Engine)
    model_root: Path | None = None

    def model_path(self, name: str, field_name: str, op_name: str) -> Path:
        """A model directory from an op parameter; relative names resolve against ``model_root``."""
        path = Path(name)
        if not path.is_absolute():
            path = (self.model_root or Path.cwd()) / path
        if not path.is_dir():
            raise ValueError(
                f"{op_name}: field {field_name!r}: model {name!r} not found at {str(path)!r} "
                "(models load from local directories only; pass model_root to point at them)"
            )
        return path


class Operator(ABC):
    """One step of a recipe; ``Config`` is its typed parameter schema."""

    name: ClassVar[str]  # the recipe name, registered in bettersynth.ops
    Config: ClassVar[type[OpConfig]] = OpConfig

    def __init__(self, config: OpConfig | None = None, context: OpContext | None = None):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{self.name}: config must be {self.Config.__name__}, got {type(self.config).__name__}")
        self.context = context or OpContext()


@dataclass(frozen=True)
class Decision:
    """A filter's verdict on one sample, with the value and bound that decided it."""

    keep: bool
    stat: str
    value: Any
    bound: str | None = None  # the violated bound, e.g. "min_score=0.1"; None when kept


class Filter(Operator):
    """Scores samples into ``sample.stats[stat_key]``, then keeps min <= score <= max.

    A list-valued stat (one value per chunk or image) keeps the sample when
    ``any`` (or ``all``, per the config's ``any_or_all``) value is in bounds;
    an empty list keeps it (nothing to judge).
    """

    stat_key: ClassVar[str]
    min_field: ClassVar[str] = "min_score"
    max_field: ClassVar[str] = "max_score"

    @abstractmethod
    def compute_stats(self, batch: list[Sample]) -> list[Any | Failure]:
        """One stat (or a ``Failure`` rejecting that sample) per sample, in order."""

    def keep(self, sample: Sample) -> Decision:
        if self.stat_key not in sample.stats:
            raise ValueError(f"{self.name}: sample {sample.id!r} has no stat {self.stat_key!r}")
        value = sample.stats[self.stat_key]
        values = value if isinstance(value, list) else [value]
        low, high = getattr(self.config, self.min_field), getattr(self.config, self.max_field)
        in_bounds = [v is not None and not _isnan(v) and low <= v <= high for v in values]
        if not values:
            return Decision(True, self.stat_key, value)
        mode = getattr(self.config, "any_or_all", "any")
        if any(in_bounds) if mode == "any" else all(in_bounds):
            return Decision(True, self.stat_key, value)
        first_bad = values[in_bounds.index(False)]
        bound = f"{self.min_field}={low}" if first_bad is None or _isnan(first_bad) or first_bad < low else f"{self.max_field}={high}"
        return Decision(False, self.stat_key, value, bound)

    def process(self, batch: list[Sample]) -> list[Decision | Failure]:
        """Score the whole batch, store the stats, then decide each sample."""
        stats = self.compute_stats(batch)
        if len(stats) != len(batch):
            raise RuntimeError(f"{self.name}: compute_stats returned {len(stats)} stats for {len(batch)} samples")
        decisions: list[Decision | Failure] = []
        for sample, stat in zip(batch, stats):
            if isinstance(stat, Failure):
                decisions.append(stat)
                continue
            sample.stats[self.stat_key] = stat
            decisions.append(self.keep(sample))
        return decisions


@dataclass
class Mapped:
    """A mapper's output for one input: the input (possibly changed, or None if replaced) and new samples."""

    original: Sample | None
    added: list[Sample] = field(default_factory=list)


class Mapper(Operator):
    """Transforms samples; may replace a sample or emit extra ones."""

    @abstractmethod
    def process(self, batch: list[Sample]) -> list[Mapped | Failure]:
        """One ``Mapped`` (or ``Failure``) per input sample, in order."""


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


OPERATORS: Registry[type[Operator]] = Registry("operator", base=Operator)
