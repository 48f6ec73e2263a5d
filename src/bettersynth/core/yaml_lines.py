"""YAML read safely, remembering the line of every key and list item, so config errors can name it.

Why: "recipe.yaml: field 'min_scor'" is not enough in a long file; an error
that says "recipe.yaml:14:" takes the reader (and the editor) to the line.
Only ``yaml.SafeLoader`` is used, so tags that build Python objects are
refused exactly as ``yaml.safe_load`` refuses them. Duplicate keys, which
YAML silently resolves to the last one, are reported.

Example::

    data, lines = load_yaml(Path("recipe.yaml"))
    lines.where(("process", 1, "image_text_similarity_filter", "min_score"))  # "recipe.yaml:9"
    plan = load_model(Path("train.yaml"), TrainPlan)  # "train.yaml:4: field 'sample_cap': ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Key = tuple[Any, ...]  # a path into the document: mapping keys as str, list positions as int

_MERGE_TAG = "tag:yaml.org,2002:merge"
Model = TypeVar("Model", bound=BaseModel)


@dataclass
class Lines:
    """Line numbers (1-based) of the keys and list items of one YAML document."""

    source: str
    by_path: dict[Key, int] = field(default_factory=dict)
    duplicates: list[tuple[Key, int, int]] = field(default_factory=list)  # (path, first line, repeated line)

    def at(self, path: Key) -> int | None:
        """The line of ``path``, or of its closest ancestor that is in the file (a missing field)."""
        path = tuple(p if isinstance(p, int) and not isinstance(p, bool) else str(p) for p in path)
        while path:
            if path in self.by_path:
                return self.by_path[path]
            path = path[:-1]
        return self.by_path.get(())

    def where(self, path: Key) -> str:
        """``source:line`` for ``path`` (just ``source`` when no line is known)."""
        line = self.at(path)
        return f"{self.source}:{line}" if line is not None else self.source


def load_yaml(path: str | Path) -> tuple[Any, Lines]:
    """Parse ``path`` safely; ValueError names the file and line of any syntax or encoding error."""
    path = Path(path)
    return parse_yaml(read_utf8(path), str(path))


def read_utf8(path: Path) -> str:
    """A text file's contents; ValueError names the file and the line of the first byte that is not UTF-8."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from None


def load_model(path: str | Path, model: type[Model]) -> Model:
    """Validate a YAML file into a pydantic ``model``; one ValueError lists every problem as
    ``file:line: field 'a.b': message`` (an empty file validates as an empty mapping)."""
    data, lines = load_yaml(path)
    problems = [(lines.at(p) or 0, f"{lines.where(p)}: key {p[-1]!r} is given twice (lines {a} and {b})")
                for p, a, b in lines.duplicates]
    try:
        result = model.model_validate({} if data is None else data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            name = ".".join(str(part) for part in loc)
            text = f"field {name!r}: {err.get('msg', 'invalid')}" if name else err.get("msg", "invalid")
            problems.append((lines.at(loc) or 0, f"{lines.where(loc)}: {text}"))
        result = None
    if problems:
        problems.sort(key=lambda item: item[0])
        if len(problems) == 1:
            raise ValueError(problems[0][1])
        raise ValueError(f"{path}: {len(problems)} problems:\n" + "\n".join(f"  - {text}" for _, text in problems))
    return result


def parse_yaml(text: str, source: str = "<yaml>") -> tuple[Any, Lines]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines = Lines(source)
        if node is not None:
            lines.by_path[()] = node.start_mark.line + 1
            _walk(node, (), lines, set())  # before construction, which rewrites merge keys
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        if mark is None or (context is not None and mark.index >= len(text.rstrip())):
            mark = context  # an unclosed bracket or quote: where it opened, not the end of the file
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ValueError(f"{where}: not valid YAML ({exc})") from None
    finally:
        loader.dispose()
    return data, lines


def _walk(node: yaml.Node, path: Key, lines: Lines, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: its lines were recorded where the anchor is (and no alias bomb)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first:
                lines.duplicates.append((path + (key,), first[key], line))
            first.setdefault(key, line)
            lines.by_path[path + (key,)] = line
            _walk(value_node, path + (key,), lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.by_path[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), lines, seen)
