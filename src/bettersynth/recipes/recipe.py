"""Recipes: a Data-Juicer style YAML list of operators, validated before any work runs.

Why: a typo in a 400k-sample run must fail in the first second, naming the
file and line (``recipe.yaml:14: process[1] ...: field 'min_scor'``), the op,
its position and the field; and the same recipe must hash the same on every
machine so DVC and MLflow can tell runs apart.

Example::

    # recipe.yaml
    name: clip-032
    process:
      - words_num_filter: {min_num: 5}
      - image_text_similarity_filter: {hf_clip: clip-vit-b32, min_score: 0.32}

    recipe = Recipe.load("recipe.yaml")
    recipe.hash()         # sha256 of the normalised ops
    recipe.flat_params()  # {"image_text_similarity_filter.min_score": 0.32, ...}

A multi-round recipe replaces ``process`` by ``rounds``: each round is a
``process`` list applied to the samples its ``where`` selects (by a stat an
earlier round scored, or a seeded fraction); the others pass it untouched
and the results merge back. ``bettersynth.recipes.rounds.run_rounds`` runs it
(``process_dataset`` and ``bettersynth data apply`` choose it for such recipes)::

    rounds:
      - name: score
        process: [{image_text_similarity_filter: {hf_clip: clip, min_score: 0.01}}]
      - name: recaption-low
        where: {stat: image_text_similarity, max: 0.28}
        process:
          - image_captioning_mapper: {hf_img2seq: blip2, keep_original_sample: false}
          - image_text_similarity_filter: {hf_clip: clip, min_score: 0.28}
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from bettersynth.core.yaml_lines import Key, Lines, load_yaml
from bettersynth.ops import OPERATORS, OpConfig, OpContext, Operator
from bettersynth.recipes.dj_config import DATA_JUICER_KEYS, check_value

# Data-Juicer's top-level keys, each honoured, accepted without effect or refused by value: bettersynth.recipes.dj_config.
# Per-op Data-Juicer options about resources and batching: the engine decides these, so they are dropped.
OP_RUNTIME_KEYS = frozenset(
    {"accelerator", "num_proc", "mem_required", "cpu_required", "gpu_required", "batch_size", "turbo",
     "skip_op_error", "memory", "num_cpus", "num_gpus", "runtime_np", "work_dir", "index_key"}
)
# Per-op options accepted only at one value (then dropped): the first allowed value is the one we run with.
OP_FIXED = {"text_key": ("text",), "image_key": ("images",), "trust_remote_code": (False,)}
OP_FIXED_WHY = {
    "text_key": "text is always 'text'",
    "image_key": "images are always 'images'",
    "trust_remote_code": "only trust_remote_code: false; models load from local folders and run built-in transformers code only",
}


@dataclass(frozen=True)
class OpSpec:
    """One validated step: the op's registered name and its typed config."""

    name: str
    config: OpConfig

    def build(self, context: OpContext) -> Operator:
        return OPERATORS.get(self.name)(self.config, context)


class RoundSelect(BaseModel):
    """Which samples enter a round; the rest pass it unchanged. Unset parts select everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stat: str | None = None  # a __dj__stats__ key scored by an earlier round; samples without it do not enter
    min: float = float("-inf")  # closed range of the stat that enters
    max: float = float("inf")
    any_or_all: Literal["any", "all"] = "any"  # list-valued stats: one value in range, or every value
    fraction: float | None = None  # a seeded share of the samples (hash of seed and id), after the stat test
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> RoundSelect:
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"field 'fraction': must be in [0, 1], got {self.fraction}")
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


@dataclass(frozen=True)
class Round:
    """One round of a multi-round recipe: its ops and the samples they apply to."""

    name: str
    ops: list[OpSpec]
    where: RoundSelect | None = None  # None: every sample enters

    def normalised(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "process": [{s.name: s.config.model_dump(mode="json")} for s in self.ops]}
        if self.where is not None:
            data["where"] = self.where.model_dump(mode="json", exclude_defaults=True)
        return data


@dataclass
class Recipe:
    ops: list[OpSpec]  # every op; for a multi-round recipe, all rounds' ops in order
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # Data-Juicer keys, kept as given
    source: str = "<recipe>"
    rounds: list[Round] = field(default_factory=list)  # empty for a single-``process`` recipe

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and validate a recipe file; errors name ``file:line``, the op and the field."""
        data, lines = load_yaml(path)
        return cls.from_dict(data, source=str(path), lines=lines)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<recipe>", lines: Lines | None = None) -> Recipe:
        """Validate the whole recipe, then raise once listing every problem found.

        ``lines`` (from ``bettersynth.core.yaml_lines.load_yaml``) adds the line of each problem."""
        problems = _Problems(source, lines)
        if lines is not None:
            for path, first, again in lines.duplicates:
                problems.add(path, f"key {path[-1]!r} is given twice (lines {first} and {again}); YAML would keep only the last")
        if not isinstance(data, dict):
            problems.add((), "a recipe must be a mapping with a 'process' list")
            problems.raise_if_any()
        for key in sorted(set(data) - {"name", "process", "rounds"} - DATA_JUICER_KEYS, key=str):
            problems.add((str(key),), f"unknown top-level key {key!r}; expected 'name', 'process', 'rounds' or Data-Juicer keys")
        for key in sorted(DATA_JUICER_KEYS & set(data)):
            problem = check_value(key, data[key])
            if problem is not None:
                problems.add((key,), problem)
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            problems.add(("name",), "field 'name' must be a string")
        rounds: list[Round] = []
        if "rounds" in data:
            if "process" in data:
                problems.add(("process",), "give either 'process' (one round) or 'rounds', not both")
            rounds = _parse_rounds(data["rounds"], problems)
            ops = [spec for r in rounds for spec in r.ops]
        else:
            ops = _parse_process(data.get("process"), (), problems)
        problems.raise_if_any()
        extra = {k: v for k, v in data.items() if k in DATA_JUICER_KEYS}
        return cls(ops=ops, name=name, extra=extra, source=source, rounds=rounds)

    @property
    def is_multi_round(self) -> bool:
        return bool(self.rounds)

    def normalised(self) -> list[dict[str, Any]]:
        """The ops with every parameter (defaults included), as plain JSON data."""
        return [{spec.name: spec.config.model_dump(mode="json")} for spec in self.ops]

    def hash(self) -> str:
        """sha256 of the normalised ops: same operations → same hash, whatever the name,
        paths, key order or whether defaults were written out. Rounds (their selection
        and grouping) are part of what is computed, so they are part of the hash."""
        body: dict[str, Any] = {"process": self.normalised()}
        if self.rounds:
            body = {"rounds": [r.normalised() for r in self.rounds]}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def flat_params(self) -> dict[str, Any]:
        """``{"<op>.<param>": value}`` for MLflow; a repeated op becomes ``<op>_2``, ``<op>_3``..."""
        flat: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for entry in self.normalised():
            (op_name, params), = entry.items()
            seen[op_name] = seen.get(op_name, 0) + 1
            label = op_name if seen[op_name] == 1 else f"{op_name}_{seen[op_name]}"
            for param, value in sorted(params.items()):
                flat[f"{label}.{param}"] = value
        return flat

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        if self.name is not None:
            data["name"] = self.name
        if self.rounds:
            data["rounds"] = [r.normalised() for r in self.rounds]
        else:
            data["process"] = self.normalised()
        return data

    def build_ops(self, context: OpContext) -> list[Operator]:
        if self.rounds:
            raise ValueError(f"{self.source}: this recipe has rounds (each applies to a subset); "
                             "run it with bettersynth.recipes.rounds.run_rounds, not as one op list")
        return [spec.build(context) for spec in self.ops]

    def round_recipe(self, index: int) -> Recipe:
        """Round ``index`` as a plain single-process recipe (what the runner executes)."""
        r = self.rounds[index]
        return Recipe(ops=list(r.ops), name=f"{self.name or 'recipe'}/{r.name}", extra=dict(self.extra), source=f"{self.source}#rounds[{index}]")


@dataclass
class _Problems:
    """Every problem found in one recipe, each with the path of the field it is about."""

    source: str
    lines: Lines | None
    items: list[tuple[Key, str]] = field(default_factory=list)

    def add(self, path: Key, text: str) -> None:
        self.items.append((path, text))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if self.lines is not None:  # in file order
            self.items.sort(key=lambda item: self.lines.at(item[0]) or 0)
        where = [self.lines.where(path) if self.lines is not None else self.source for path, _ in self.items]
        if len(self.items) == 1:
            raise ValueError(f"{where[0]}: {self.items[0][1]}")
        listed = [f"{w}: {text}" if self.lines is not None else text for w, (_, text) in zip(where, self.items)]
        raise ValueError(f"{self.source}: {len(self.items)} problems:\n" + "\n".join(f"  - {item}" for item in listed))


def _parse_process(process: Any, path: Key, problems: _Problems) -> list[OpSpec]:
    label = "".join(f"{p}." if isinstance(p, str) else f"[{p}]." for p in path).replace(".[", "[")
    if not isinstance(process, list) or not process:
        problems.add(path + ("process",), f"field '{label}process' must be a non-empty list of operators")
        return []
    specs = [_parse_op(entry, path + ("process", i), f"{label}process[{i}]", problems) for i, entry in enumerate(process)]
    return [spec for spec in specs if spec is not None]


def _parse_rounds(rounds: Any, problems: _Problems) -> list[Round]:
    if not isinstance(rounds, list) or not rounds:
        problems.add(("rounds",), "field 'rounds' must be a non-empty list of rounds")
        return []
    parsed, names = [], set()
    for i, entry in enumerate(rounds):
        path = ("rounds", i)
        if not isinstance(entry, dict):
            problems.add(path, f"rounds[{i}]: a round must be a mapping with 'process' (and optional 'name', 'where')")
            continue
        for key in sorted(set(entry) - {"name", "where", "process"}, key=str):
            problems.add(path + (str(key),), f"rounds[{i}]: unknown key {key!r}; expected 'name', 'where', 'process'")
        name = str(entry.get("name", f"round-{i}"))
        if name in names:
            problems.add(path + ("name",), f"rounds[{i}]: round name {name!r} is used twice")
        names.add(name)
        select = None
        if entry.get("where") is not None:
            where = entry["where"]
            if not isinstance(where, dict):
                problems.add(path + ("where",), f"rounds[{i}].where: must be a mapping like {{stat: ..., min: ..., max: ...}}")
            else:
                try:
                    select = RoundSelect(**{str(k): v for k, v in where.items()})
                except ValidationError as exc:
                    for err in exc.errors():
                        loc = tuple(str(p) for p in err.get("loc", ()))
                        problems.add(path + ("where", *loc), f"rounds[{i}].where: {_describe(err, list(RoundSelect.model_fields))}")
        parsed.append(Round(name, _parse_process(entry.get("process"), path, problems), select))
    return parsed


def _parse_op(entry: Any, path: Key, label: str, problems: _Problems) -> OpSpec | None:
    if isinstance(entry, str):  # "- words_num_filter" with no parameters
        entry = {entry: None}
    if not isinstance(entry, dict) or len(entry) != 1:
        problems.add(path, f"{label}: each step must be a mapping with exactly one op name, e.g. '- words_num_filter: {{min_num: 5}}'")
        return None
    (op_name, params), = entry.items()
    op_name = str(op_name)
    path = path + (op_name,)
    try:
        op_cls = OPERATORS.get(op_name)
    except ValueError as exc:
        problems.add(path, f"{label}: {exc}")
        return None
    if params is None:
        params = {}
    if not isinstance(params, dict):
        problems.add(path, f"{label} {op_name!r}: parameters must be a mapping, got {type(params).__name__}")
        return None
    params = {str(k): v for k, v in params.items()}
    unsupported = [k for k, v in params.items() if k in OP_FIXED and v not in OP_FIXED[k]]
    for key in unsupported:
        problems.add(path + (key,), f"{label} {op_name!r}: Data-Juicer option {key}={params[key]!r} is not supported ({OP_FIXED_WHY[key]})")
    if unsupported:
        return None
    params = {k: v for k, v in params.items() if k not in OP_RUNTIME_KEYS and k not in OP_FIXED}
    try:
        config = op_cls.Config(**params)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p if isinstance(p, int) else str(p) for p in err.get("loc", ()))
            problems.add(path + loc, f"{label} {op_name!r}: {_describe(err, list(op_cls.Config.model_fields))}")
        return None
    return OpSpec(op_name, config)


def _describe(err: dict[str, Any], fields: list[str]) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        close = difflib.get_close_matches(loc, fields, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f" (known: {', '.join(fields)})"
        return f"field {loc!r}: unknown parameter{hint}"
    msg = err.get("msg", "invalid")
    return f"field {loc!r}: {msg}" if loc else msg
