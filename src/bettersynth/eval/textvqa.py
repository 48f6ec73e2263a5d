"""TextVQA val files, LLaVA's OCR prompt and the VQA soft accuracy.

Why: the OCR tokens in the prompt are worth 10+ points, and LLaVA/MGM numbers
come from MMF's leave-one-out accuracy; both must match the reference exactly
for our scores to be comparable with published ones.

Example::

    items = load_textvqa("llava_textvqa_val_v051_ocr.jsonl", "TextVQA_0.5.1_val.json")
    build_prompt(items[0].question, items[0].ocr_tokens)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Collection

from bettersynth.core.images import ImageError, resolve_image
from bettersynth.core.yaml_lines import read_utf8
from bettersynth.eval.benchmark import BENCHMARKS, Benchmark, EvalItem, percent_mean
from bettersynth.eval.normalize import normalize_answer

OCR_PREFIX = "Reference OCR token: "
ANSWER_SUFFIX = "Answer the question using a single word or phrase."
NUM_ANSWERS = 10  # TextVQA has ten human answers per question; MMF asserts it


@dataclass(frozen=True)
class TextVQAQuestion:
    """One val question joined with its human answers."""

    question_id: str  # TextVQA's question_id (unique), not LLaVA's per-image id
    image_id: str
    image_file: str  # file name inside the image folder, from LLaVA's ``image``
    question: str
    ocr_tokens: tuple[str, ...]
    answers: tuple[str, ...]


def build_prompt(question: str, ocr_tokens: tuple[str, ...] | list[str], use_ocr: bool = True) -> str:
    """LLaVA-1.5/MGM's TextVQA prompt; without OCR it is the two-line variant."""
    if use_ocr and ocr_tokens:
        return f"{question}\n{OCR_PREFIX}{', '.join(ocr_tokens)}\n{ANSWER_SUFFIX}"
    return f"{question}\n{ANSWER_SUFFIX}"


def parse_llava_text(text: str, where: str) -> tuple[str, tuple[str, ...]]:
    """Split LLaVA's ``text`` back into the question and its OCR tokens."""
    lines = text.split("\n")
    if lines[-1] != ANSWER_SUFFIX or len(lines) not in (2, 3):
        raise ValueError(f"{where}: field 'text' is not '<question>\\n[{OCR_PREFIX}...\\n]{ANSWER_SUFFIX}'")
    if len(lines) == 2:
        return lines[0], ()
    if not lines[1].startswith(OCR_PREFIX.rstrip()):
        raise ValueError(f"{where}: field 'text' line 2 does not start with {OCR_PREFIX!r}")
    tokens = lines[1][len(OCR_PREFIX):]
    return lines[0], tuple(tokens.split(", ")) if tokens.strip() else ()


def _field(record: object, name: str, kind: type | tuple[type, ...], where: str) -> object:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if name not in record:
        raise ValueError(f"{where}: missing field {name!r}")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: field {name!r} has type {type(value).__name__}")
    return value


def load_annotations(path: str | Path) -> list[dict]:
    """Read ``TextVQA_0.5.1_val.json``, checking the fields the evaluator uses.

    Errors name the file, the record (``data[3]``), its line and the field."""
    path = Path(path)
    text = read_utf8(path)
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    data = _field(payload, "data", list, str(path))
    for number, record in enumerate(data):
        where = f"{path}: data[{number}]"
        try:
            _field(record, "question_id", (int, str), where)
            _field(record, "image_id", str, where)
            _field(record, "question", str, where)
            answers = _field(record, "answers", list, where)
            if len(answers) != NUM_ANSWERS or not all(isinstance(a, str) for a in answers):
                raise ValueError(f"{where}: field 'answers' must be {NUM_ANSWERS} strings")
        except ValueError as exc:
            raise ValueError(f"{exc} (line {_array_item_line(text, 'data', number)})") from None
    return data


def _array_item_line(text: str, key: str, index: int) -> int | None:
    """The line where item ``index`` of the top-level object's ``key`` array starts (for error
    messages only: the file is scanned again, value by value, without building it)."""
    decoder, pos = json.JSONDecoder(), 0

    def skip(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n,:":
            at += 1
        return at

    try:
        pos = skip(pos)
        if text[pos] != "{":
            return None
        pos = skip(pos + 1)
        while text[pos] != "}":
            name, pos = decoder.raw_decode(text, pos)
            pos = skip(pos)
            if name == key and text[pos] == "[":
                pos = skip(pos + 1)
                for _ in range(index):
                    _, pos = decoder.raw_decode(text, pos)
                    pos = skip(pos)
                return text.count("\n", 0, pos) + 1
            _, pos = decoder.raw_decode(text, pos)
            pos = skip(pos)
    except (ValueError, IndexError):
        return None
    return None


def load_questions(path: str | Path) -> list[dict]:
    """Read LLaVA's ``llava_textvqa_val_v051_ocr.jsonl``; adds ``where`` (file:line) to each record."""
    path = Path(path)
    records = []
    for number, line in enumerate(read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
        _field(record, "question_id", (int, str), where)
        _field(record, "image", str, where)
        _field(record, "text", str, where)
        records.append({**record, "where": where})
    return records


def load_textvqa(questions_path: str | Path, annotations_path: str | Path,
                 image_dir: str | Path | None = None) -> list[TextVQAQuestion]:
    """Join LLaVA's question lines with the official answers.

    LLaVA's ``question_id`` is the image id, so, like ``eval_textvqa.py``, a line
    is matched on (image id, lower-cased question); repeated keys pair up in order.
    With ``image_dir``, every line's ``image`` must be a file inside it, so a bad
    line fails here, before any model is loaded.
    """
    by_key: dict[tuple[str, str], list[dict]] = {}
    for record in load_annotations(annotations_path):
        by_key.setdefault((record["image_id"], record["question"].lower()), []).append(record)
    used: dict[tuple[str, str], int] = {}
    out: list[TextVQAQuestion] = []
    for record in load_questions(questions_path):
        question, tokens = parse_llava_text(record["text"], record["where"])
        image_id = PurePosixPath(record["image"]).stem
        key = (image_id, question.lower())
        matches = by_key.get(key, [])
        if used.get(key, 0) >= len(matches):
            raise ValueError(f"{record['where']}: fields 'image'/'text' match no annotation "
                             f"(image_id={image_id!r}, question={question!r})")
        if image_dir is not None:
            _check_image(Path(image_dir), record["image"], record["where"])
        annotation = matches[used.get(key, 0)]
        used[key] = used.get(key, 0) + 1
        out.append(TextVQAQuestion(str(annotation["question_id"]), image_id, record["image"],
                                   question, tokens, tuple(annotation["answers"])))
    return out


def _check_image(image_dir: Path, rel: str, where: str) -> None:
    try:
        found = resolve_image(image_dir, rel).is_file()
    except ImageError as exc:
        raise ValueError(f"{where}: field 'image': {exc}") from None
    if not found:
        raise ValueError(f"{where}: field 'image': {rel!r} is not a file in {str(image_dir)!r}")


def answer_scores(gt_answers: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Soft score of every distinct normalised answer: mean over leave-one-out subsets."""
    answers = [normalize_answer(a) for a in gt_answers]
    scores = {}
    for candidate in set(answers):
        accs = []
        for left_out in range(len(answers)):
            matches = sum(1 for i, a in enumerate(answers) if i != left_out and a == candidate)
            accs.append(min(1.0, matches / 3))
        scores[candidate] = sum(accs) / len(accs)
    return scores


def vqa_accuracy(prediction: str, gt_answers: list[str] | tuple[str, ...]) -> float:
    """Score in [0, 1] of one prediction; gt answers are normalised like the prediction."""
    return answer_scores(gt_answers).get(normalize_answer(prediction), 0.0)


@BENCHMARKS.register("textvqa")
class TextVQA(Benchmark):
    """TextVQA val with LLaVA's OCR-token prompt; metric ``textvqa_accuracy`` (percent)."""

    name = "textvqa"

    def __init__(self, questions_path: str | Path, annotations_path: str | Path,
                 image_dir: str | Path, use_ocr: bool = True, limit: int | None = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        self.image_dir = Path(image_dir)
        self.use_ocr = use_ocr
        self.questions = load_textvqa(questions_path, annotations_path, self.image_dir)[:limit]
        self._by_id = {q.question_id: q for q in self.questions}

    def question_ids(self) -> list[str]:
        return [q.question_id for q in self.questions]

    def prompt(self, question: TextVQAQuestion) -> str:
        return build_prompt(question.question, question.ocr_tokens, self.use_ocr)

    def items(self, question_ids: Collection[str] | None = None) -> list[EvalItem]:
        wanted = None if question_ids is None else set(question_ids)
        return [EvalItem(q.question_id, self.image_dir / q.image_file, self.prompt(q))
                for q in self.questions if wanted is None or q.question_id in wanted]

    def score_one(self, question_id: str, output: str) -> dict:
        question = self._by_id[question_id]
        return {"question_id": question_id, "prompt": self.prompt(question), "output": output,
                "answer": normalize_answer(output), "score": vqa_accuracy(output, question.answers),
                "gt_answers": list(question.answers), "image": question.image_file,
                "question": question.question, "ocr_tokens": list(question.ocr_tokens),
                "use_ocr": self.use_ocr, "answer_in_ocr": answer_in_ocr(question)}

    @classmethod
    def aggregate(cls, records: list[dict]) -> tuple[dict[str, float], dict[str, list[dict]]]:
        if not records:
            return {}, {}
        # Why a number is what it is: how much of it sits on questions the OCR tokens can answer.
        split: dict[str, list[float]] = {}
        for record in records:
            split.setdefault(str(record.get("answer_in_ocr", "unknown")).lower(), []).append(record["score"])
        table = [{"answer_in_ocr": key, "questions": len(scores), "accuracy": percent_mean(scores)}
                 for key, scores in sorted(split.items())]
        return {"textvqa_accuracy": percent_mean(r["score"] for r in records)}, {"textvqa_ocr": table}


def answer_in_ocr(question: TextVQAQuestion) -> bool:
    """Whether a ground-truth answer worth full credit is one of the OCR tokens (normalised)."""
    tokens = {normalize_answer(token) for token in question.ocr_tokens}
    return any(score == 1.0 and answer in tokens for answer, score in answer_scores(question.answers).items())
