"""MMBench TSV, LLaVA's prompt, rule-based answers and CircularEval, scored as VLMEvalKit does.

Why: MMBench ships each N-choice question N times with rotated options
(index + k * 1_000_000); a question counts only when every rotation is right,
which is what separates real knowledge from a letter bias. The numbers follow
VLMEvalKit's exact-matching path (``mcq_circular_eval`` and ``mcq_vanilla_eval`` in
``vlmeval/dataset/utils/multiple_choice.py``, the circ0 selection in
``vlmeval/dataset/image_mcq.py``):

- answers: ``bettersynth.eval.choice.extract_choice`` (VLMEvalKit's ``can_infer``);
- CircularEval: rows grouped by ``index % 1_000_000``; a group counts only when its
  original row (``index == group``) is among the scored rows, and is right only when
  every row in it is right; its category is the original row's;
- single pass: every scored row with ``index <= 1_000_000`` (VLMEvalKit's comparison,
  so the first rotated copy of question 0 counts too);
- the LLM judge: off unless ``MMBench(..., judge=...)`` is given (see ``choice.Judge``).

Example::

    bench = MMBench("mmbench_dev_20230712.tsv")
    result = bench.score(predictions)  # metrics mmbench_circular, mmbench_single
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection

from PIL import Image

from bettersynth.core.yaml_lines import read_utf8
from bettersynth.eval.benchmark import BENCHMARKS, Benchmark, EvalItem, percent_mean
from bettersynth.eval.choice import Judge, extract_choice

__all__ = ["MMBench", "MMBenchRow", "extract_choice", "load_mmbench", "build_prompt"]

LETTERS = ("A", "B", "C", "D")
REQUIRED = ("index", "question", "A", "B", "image")
OPTIONAL = ("hint", "C", "D", "answer", "category", "l2-category")
CIRCULAR_STRIDE = 1_000_000
ANSWER_SUFFIX = "Answer with the option's letter from the given choices directly."
# LLaVA/VLMEvalKit read the TSV with pandas, whose default NA strings turn
# these cells into NaN; treating them as empty keeps option counts identical.
_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
       "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
_IMAGE_REF_MAX = 64  # VLMEvalKit: a short image cell is the index of a row holding the image


@dataclass(frozen=True)
class MMBenchRow:
    """One (possibly rotated) multiple-choice question."""

    index: int
    question: str
    hint: str | None
    options: dict[str, str]  # letter -> text, contiguous from A
    answer: str | None  # None in the test split
    category: str
    l2_category: str
    image: bytes  # encoded image file

    @property
    def group(self) -> int:
        return self.index % CIRCULAR_STRIDE


def _cell(value: str | None) -> str | None:
    return None if value is None or value in _NA else value


def build_prompt(question: str, options: dict[str, str], hint: str | None = None) -> str:
    """``[hint\\n]question\\nA. ...\\nB. ...\\n<instruction>`` as in LLaVA's MMBench eval."""
    text = question if hint is None else f"{hint}\n{question}"
    for letter, option in options.items():
        text += f"\n{letter}. {option}"
    return f"{text}\n{ANSWER_SUFFIX}"


def _parse_row(raw: dict[str, str | None], where: str) -> tuple[MMBenchRow, str]:
    def need(name: str) -> str:
        value = _cell(raw.get(name))
        if value is None:
            raise ValueError(f"{where}: field {name!r} is empty")
        return value

    index_cell = need("index")
    if not index_cell.strip().lstrip("-").isdigit():
        raise ValueError(f"{where}: field 'index' is {index_cell!r}, not an integer")
    index = int(index_cell)
    options: dict[str, str] = {}
    for letter in LETTERS:
        text = _cell(raw.get(letter))
        if text is None:
            continue
        if len(options) != LETTERS.index(letter):
            raise ValueError(f"{where}: field {letter!r} is set but an earlier option is empty")
        options[letter] = text
    if len(options) < 2:
        raise ValueError(f"{where}: fields 'A' and 'B' must both be set")
    answer = _cell(raw.get("answer"))
    if answer is not None and answer not in options:
        raise ValueError(f"{where}: field 'answer' is {answer!r}, not one of {list(options)}")
    row = MMBenchRow(index, need("question"), _cell(raw.get("hint")), options, answer,
                     _cell(raw.get("category")) or "", _cell(raw.get("l2-category")) or "", b"")
    return row, need("image")


def _decode_image(cell: str, where: str) -> bytes:
    """The image bytes of a cell; checked to be a readable image now, not at inference time."""
    try:
        data = base64.b64decode(cell, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: field 'image' is not base64") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, struct.error...) for bad bytes
        raise ValueError(f"{where}: field 'image' is not a readable image ({type(exc).__name__}: {exc})") from None
    return data


def load_mmbench(path: str | Path) -> list[MMBenchRow]:
    """Read an MMBench TSV with the csv module, validating every row before any is used.

    Errors name the file, the row, the line it starts on and the field."""
    path = Path(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images exceed the 128 KiB default
    text = read_utf8(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    try:
        missing = [name for name in REQUIRED if name not in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise ValueError(f"{path}:1: header is not TSV ({exc})") from None
    if missing:
        raise ValueError(f"{path}: header lacks columns {missing} (line 1)")
    parsed: list[tuple[MMBenchRow, str, str]] = []
    number, start = 0, reader.line_num + 1
    while True:
        try:
            raw_row = next(reader, None)
        except csv.Error as exc:
            raise ValueError(f"{path}: row {number + 1} (line {start}): not TSV ({exc})") from None
        if raw_row is None:
            break
        number += 1
        where = f"{path}: row {number} (line {start})"
        start = reader.line_num + 1
        if None in raw_row:
            raise ValueError(f"{where}: more cells than header columns")
        row, cell = _parse_row(raw_row, where)
        parsed.append((row, cell, where))
    cells: dict[int, str] = {}
    for row, cell, where in parsed:
        if row.index in cells:
            raise ValueError(f"{where}: field 'index' repeats {row.index}")
        cells[row.index] = cell
    rows = []
    for row, cell, where in parsed:
        if len(cell) <= _IMAGE_REF_MAX and cell.isdigit():
            cell = cells.get(int(cell), "")
            if len(cell) <= _IMAGE_REF_MAX:
                raise ValueError(f"{where}: field 'image' refers to a row without an image")
        rows.append(replace(row, image=_decode_image(cell, where)))
    return rows


@BENCHMARKS.register("mmbench")
class MMBench(Benchmark):
    """MMBench with CircularEval; metrics ``mmbench_circular`` and ``mmbench_single`` (percent)."""

    name = "mmbench"

    def __init__(self, tsv_path: str | Path, limit: int | None = None, judge: Judge | None = None) -> None:
        """``limit`` keeps the first ``limit`` questions with all their rotations.

        ``judge`` is VLMEvalKit's LLM-judge step as a hook, off by default: called with
        (question, options, reply) for a graded row whose reply the rules leave
        undecided; its reply is read with the same rules (``choice.judge_choice``).
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        self.judge = judge
        self.rows = load_mmbench(tsv_path)
        if limit is not None:
            groups = list(dict.fromkeys(row.group for row in self.rows))[:limit]
            self.rows = [row for row in self.rows if row.group in set(groups)]
        self._by_id = {str(row.index): row for row in self.rows}

    def question_ids(self) -> list[str]:
        return [str(row.index) for row in self.rows]

    def group_key(self, question_id: str) -> str:
        return str(self._by_id[question_id].group)

    def items(self, question_ids: Collection[str] | None = None) -> list[EvalItem]:
        wanted = None if question_ids is None else set(question_ids)
        return [EvalItem(str(row.index), Image.open(io.BytesIO(row.image)).convert("RGB"),
                         build_prompt(row.question, row.options, row.hint))
                for row in self.rows if wanted is None or str(row.index) in wanted]

    def score_one(self, question_id: str, output: str) -> dict:
        row = self._by_id[question_id]
        # A test-split row has nothing to grade: the judge is not asked for it.
        choice = extract_choice(output, row.options, question=row.question,
                                judge=self.judge if row.answer is not None else None)
        correct = None if row.answer is None else choice == row.answer
        return {"question_id": question_id, "prompt": build_prompt(row.question, row.options, row.hint),
                "output": output, "answer": choice, "gt": row.answer,
                "score": None if correct is None else float(correct), "index": row.index,
                "group": row.group, "category": row.category, "l2_category": row.l2_category}

    @classmethod
    def aggregate(cls, records: list[dict]) -> tuple[dict[str, float], dict[str, list[dict]]]:
        graded = [r for r in records if r["score"] is not None]
        if not graded:
            return {}, {}
        groups = _circular_groups(graded)
        single = [r for r in graded if r["index"] <= CIRCULAR_STRIDE]
        overall = _accuracies(list(groups.values()), single)
        metrics = {f"mmbench_{name}": overall[name] for name in ("circular", "single") if name in overall}
        tables = {}
        for key in ("category", "l2_category"):
            names = sorted({original[key] for original, _ in groups.values()} | {r[key] for r in single})
            tables[f"mmbench_{key}"] = [
                {key: name, **_accuracies([g for g in groups.values() if g[0][key] == name],
                                          [r for r in single if r[key] == name])}
                for name in names]
        return metrics, tables

    def write_submission(self, path: str | Path, predictions: dict[str, str]) -> Path:
        """The file the MMBench server takes: ``.xlsx`` (needs openpyxl), or ``.tsv``/``.csv``.

        Columns as LLaVA's ``convert_mmbench_for_submission.py`` leaves them:
        index, question, A-D, prediction (the raw reply), answer (dev splits only).
        """
        path = Path(path)
        if path.suffix not in (".xlsx", ".tsv", ".csv"):
            raise ValueError(f"path: suffix {path.suffix!r} not supported, use .xlsx, .tsv or .csv")
        unknown = sorted(set(predictions) - set(self._by_id))
        if unknown:
            raise ValueError(f"predictions: {len(unknown)} unknown question ids, e.g. {unknown[:3]}")
        with_answer = any(row.answer is not None for row in self.rows)
        header = ["index", "question", *LETTERS, "prediction", *(["answer"] if with_answer else [])]
        table = [[row.index, row.question, *(row.options.get(x, "") for x in LETTERS),
                  predictions.get(str(row.index), ""), *([row.answer or ""] if with_answer else [])]
                 for row in self.rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".xlsx":
            _write_xlsx(path, header, table)
            return path
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writerow(header)
            writer.writerows(table)
        return path


def _write_xlsx(path: Path, header: list[str], table: list[list]) -> None:
    try:
        from openpyxl import Workbook
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    except ImportError:
        raise ValueError(f"{path.name}: writing .xlsx needs the openpyxl package; use .tsv instead") from None

    def cell(value):
        # Empty cells stay empty, as pandas writes NaN; control characters a model may
        # emit cannot be stored in .xlsx and are dropped (pandas' writer would fail on them).
        if value == "":
            return None
        return ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value

    book = Workbook()
    sheet = book.active
    sheet.append(header)
    for row in table:
        sheet.append([cell(value) for value in row])
    book.save(path)


def _circular_groups(records: list[dict]) -> dict[int, tuple[dict, float]]:
    """group -> (its original row's record, 1.0 when every row of the group is right).

    A group whose original row (``index == group``) was not scored is left out, as
    VLMEvalKit builds groups only around original rows.
    """
    rows: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        rows[record["group"]].append(record)
    groups = {}
    for group, members in rows.items():
        original = next((r for r in members if r["index"] == group), None)
        if original is not None:
            groups[group] = (original, float(all(r["score"] == 1.0 for r in members)))
    return groups


def _accuracies(groups: list[tuple[dict, float]], single: list[dict]) -> dict[str, float | int]:
    """Circular accuracy over kept groups and single-pass accuracy over rows (percent)."""
    out: dict[str, float | int] = {"questions": len(groups)}
    if groups:
        out["circular"] = percent_mean(hit for _, hit in groups)
    if single:
        out["single"] = percent_mean(r["score"] for r in single)
    return out
