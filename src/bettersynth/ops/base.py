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

import hashlib
import json
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bettersynth.core.images import ImageError, resolve_image
from bettersynth.core.registry import Registry
from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, Failure
from bettersynth.engine.score_cache import FileDigests, ScoreCache, model_fingerprint

log = logging.getLogger(__name__)

SCORE_KEY_VERSION = 1  # bump when a score's definition changes, to invalidate old entries


class OpConfig(BaseModel):
    """Base of every operator's settings; unknown fields are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class OpContext:
    """What an operator needs from the run: where data and models live, and the engine."""

    engine: Engine = field(default_factory=Engine)
    model_root: Path | None = None
    score_cache: ScoreCache | None = None  # None: every score is computed
    digests: FileDigests = field(default_factory=FileDigests)  # image hashes, shared by the run's ops
    output_dir: Path | None = None  # the variant a run writes (set by run_recipe); None when an op is called directly

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
    # True for ops that write new files under ``context.engine.dataset_root`` (re-synthesised images):
    # run_recipe then points that root at a scratch copy inside ``context.output_dir``, never the input.
    writes_images: ClassVar[bool] = False

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
    cacheable: ClassVar[bool] = False  # scores worth caching on disk (the op runs a model)
    decision_fields: ClassVar[tuple[str, ...]] = ()  # settings besides min/max/any_or_all that only decide

    cache_hits: int = 0  # scores read from the cache in the last ``process``
    cache_misses: int = 0  # scores computed in the last ``process``

    def model_dirs(self) -> list[Path]:
        """The model folders the score depends on (their files go into the cache key)."""
        return []

    @abstractmethod
    def compute_stats(self, batch: list[Sample]) -> list[Any | Failure]:
        """One stat (or a ``Failure`` rejecting that sample) per sample, in order."""

    def keep(self, sample: Sample) -> Decision:
        if self.stat_key not in sample.stats:
            raise ValueError(f"{self.name}: sample {sample.id!r} has no stat {self.stat_key!r}")
        value = sample.stats[self.stat_key]
        values = value if isinstance(value, list) else [value]
        low, high = self.bounds()
        in_bounds = [v is not None and not _isnan(v) and low <= v <= high for v in values]
        if not values:
            return Decision(True, self.stat_key, value)
        mode = getattr(self.config, "any_or_all", "any")
        if any(in_bounds) if mode == "any" else all(in_bounds):
            return Decision(True, self.stat_key, value)
        first_bad = values[in_bounds.index(False)]
        bound = f"{self.min_field}={low}" if first_bad is None or _isnan(first_bad) or first_bad < low else f"{self.max_field}={high}"
        return Decision(False, self.stat_key, value, bound)

    def bounds(self) -> tuple[Any, Any]:
        """The closed [low, high] range kept, in the stat's units (override to convert, e.g. "1MB")."""
        return getattr(self.config, self.min_field), getattr(self.config, self.max_field)

    def process(self, batch: list[Sample]) -> list[Decision | Failure]:
        """Score the whole batch (reusing cached scores), store the stats, then decide each sample."""
        return self.decide(batch, self.scores(batch))

    def decide(self, batch: list[Sample], stats: list[Any | Failure]) -> list[Decision | Failure]:
        """Store each sample's stat and decide it; a failed score passes through as the sample's rejection."""
        decisions: list[Decision | Failure] = []
        for sample, stat in zip(batch, stats):
            if isinstance(stat, Failure):
                decisions.append(stat)
                continue
            sample.stats[self.stat_key] = stat
            decisions.append(self.keep(sample))
        return decisions


    def _computed(self, batch: list[Sample]) -> list[Any | Failure]:
        stats = self.compute_stats(batch) if batch else []
        if len(stats) != len(batch):
            raise RuntimeError(f"{self.name}: compute_stats returned {len(stats)} stats for {len(batch)} samples")
        return stats

    def scores(self, batch: list[Sample]) -> list[Any | Failure]:
        cache = self.context.score_cache
        if cache is None or not self.cacheable:
            self.cache_hits, self.cache_misses = 0, len(batch)
            return self._computed(batch)
        keys = [self.score_key(sample) for sample in batch]
        found = cache.get_many(k for k in keys if k is not None)
        todo = [i for i, key in enumerate(keys) if key not in found]
        computed = self._computed([batch[i] for i in todo])
        stats: list[Any | Failure] = [found.get(key) for key in keys]
        fresh = {}
        for i, stat in zip(todo, computed):
            stats[i] = stat
            if keys[i] is not None and not isinstance(stat, Failure):
                fresh[keys[i]] = stat
        if fresh:
            cache.put_many(fresh)
        self.cache_hits, self.cache_misses = len(batch) - len(todo), len(todo)
        if batch and not todo:
            log.info("%s: all %d scores read from the cache, nothing recomputed", self.name, len(batch))
        else:
            log.info("%s: %d scores read from the cache, %d computed", self.name, self.cache_hits, self.cache_misses)
        return stats

    def score_key(self, sample: Sample) -> str | None:
        """What the score depends on: op, scoring settings, model files, text, image bytes.
        None (not cacheable) when an image cannot be read: computing will report why."""
        if not hasattr(self, "_op_key"):
            decision = {self.min_field, self.max_field, "any_or_all", *self.decision_fields}
            scoring = {k: v for k, v in self.config.model_dump(mode="json").items() if k not in decision}
            models = [model_fingerprint(path) for path in self.model_dirs()]
            self._op_key = json.dumps([self.name, SCORE_KEY_VERSION, scoring, models], sort_keys=True)
        root = self.context.engine.dataset_root
        try:
            images = [self.context.digests.digest(resolve_image(root, rel)) for rel in sample.images]
        except (ImageError, OSError):
            return None
        payload = json.dumps([self._op_key, sample.text, images], ensure_ascii=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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
