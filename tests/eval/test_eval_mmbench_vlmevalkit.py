"""MMBench scoring against VLMEvalKit's exact-matching rules: the verdict table, CircularEval, the judge hook.

How the verdicts were derived: each reply was traced by hand through VLMEvalKit's
``can_infer`` (``vlmeval/utils/matching_util.py`` at open-compass/VLMEvalKit commit
e8e78f05: ``can_infer_option`` then ``can_infer_text``), which is what
``extract_answer_from_item`` / ``prefetch_answer`` in ``vlmeval/dataset/utils/multiple_choice.py``
apply before any judge; with no judge a reply they cannot read is option "Z", which is
never the ground truth, i.e. "no answer" (``None``) here. The rule that decides is
named in each row, with the numbers of ``bettersynth.eval.choice``:

- r0: the API-failure marker skips the letter rules (r1-r4);
- r1: a refusal phrase -> no answer;
- r2: ``.()[],:;!*#{}`` become spaces, the reply is cut at whitespace; exactly one
  capital option letter as a token, first seen among the last 4 tokens -> that letter
  (a letter further from the end, or two letters, fall through to r4);
- r3: no option letter but a ``Z`` token -> no answer;
- r4: the first "answer is <a-d>" (any case) naming an option -> that letter;
- r5: reply (lower-cased) at most 2 x the summed option-text lengths, and exactly one
  lower-cased option text is a substring of it -> that option.

"was" names our previous verdict where it differed (the divergences issue 25 lists
are among them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bettersynth.eval.choice import (
    API_FAILURE,
    NO_ANSWER,
    extract_choice,
    infer_choice,
    judge_choice,
)
from bettersynth.eval.mmbench import MMBench
from tests.eval.eval_data import write_tsv

OPTIONS = {
    # texts 3 + 3 + 9 + 7 = 22 characters: replies over 44 characters skip r5
    "pets": {"A": "dog", "B": "cat", "C": "Vitamin C", "D": "hot dog"},
    "yesno": {"A": "yes", "B": "no"},  # 5 characters: r5 only for replies of at most 10
    "vitamins": {"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D", "D": "Vitamin K"},  # 36 -> 72
    "colours": {"A": "red", "B": "blue", "C": "green", "D": "yellow"},  # 18 -> 36
    "shades": {"A": "red", "B": "dark red"},  # 11 -> 22
}

LONG_DOG = "The picture shows a small brown dog lying on a green lawn in the sun."  # 69 characters
LONG_B_FIRST = "B is the right option because the animal has whiskers, pointed ears and a long tail."

# (reply, option set, VLMEvalKit's verdict, the rule that decides [; was: our previous verdict])
TABLE = [
    # --- letter forms (r2)
    ("B", "pets", "B", "r2: one token"),
    ("B.", "pets", "B", "r2: '.' is a separator"),
    ("(B)", "pets", "B", "r2: parentheses are separators"),
    ("B)", "pets", "B", "r2"),
    ("B) cat", "pets", "B", "r2: tokens B, cat; B at 0 of 2"),
    ("[C]", "pets", "C", "r2: brackets are separators"),
    ("**D**", "pets", "D", "r2: '*' is a separator"),
    ("\nB\n", "pets", "B", "r2: newlines are whitespace"),
    ("Answer: C", "pets", "C", "r2: tokens Answer, C"),
    ("The answer is B.", "pets", "B", "r2: B at 3 of 4 tokens"),
    ("I think D", "pets", "D", "r2: 'I' is not an option letter"),
    ("Option A", "pets", "A", "r2"),
    ("D. hot dog", "pets", "D", "r2 decides before r5 sees two texts"),
    ("B. B.", "pets", "B", "r2: one distinct letter, first at 0 of 2"),
    ("C. Vitamin C", "pets", "C", "r2: C counted once, first at 0 of 3"),
    ("B or Z", "pets", "B", "r2: Z is no option letter, so one letter"),
    ("The correct answer is **C**", "pets", "C", "r2: C is the last token"),
    # --- lower-case letters: not tokens of r2
    ("b", "pets", None, "r2 is case-sensitive; r4 no; r5 no text in 'b'"),
    ("(c)", "pets", None, "r2 case-sensitive; r5 no text in '(c)'"),
    ("the answer is b", "pets", "B", "r4 reads 'b' in any case; was: None"),
    ("answer: b", "pets", None, "r4 needs 'answer is'; r5 no text"),
    # --- several letters
    ("A and B", "pets", None, "r2 two letters; r4 no; r5 no text"),
    ("B, C", "pets", None, "r2 two letters; r5 no text"),
    ("A or B", "pets", None, "r2 two letters"),
    ("A and B look alike, but the answer is B", "pets", "B", "r2 two letters -> r4; was: None"),
    ("A. dog  B. cat", "pets", None, "r2 two letters; r5 'dog' and 'cat' both occur"),
    # --- letters that are no option
    ("E", "pets", None, "E is no option; r5 no text"),
    ("C", "yesno", None, "C is no option; r5 no text"),
    ("The answer is C", "yesno", None, "r4 reads C, no option; r5: 15 > 10 characters"),
    ("The answer is E.", "pets", None, "r4 only reads a-d; r5 no text"),
    # --- where the lone letter stands (r2 wants it among the last 4 tokens)
    ("B is my answer.", "pets", "B", "r2: B at 0 of 4"),
    ("B is my final answer", "pets", None, "r2: B at 0 of 5; r4 no 'answer is'; r5 no text; was: B"),
    ("So B is my answer", "pets", "B", "r2: B at 1 of 5"),
    ("I choose B as the answer here", "pets", None, "r2: B at 2 of 7; r4 no; r5 no text; was: B"),
    (LONG_B_FIRST, "pets", None, "long reply: r2 B at 0 of 16; r5 over 44 characters; was: B"),
    ("The animal has whiskers, pointed ears and a long tail, so the answer is B.", "pets", "B",
     "r2: B is the last token"),
    ("The answer is B because the animal in the picture has whiskers.", "pets", "B",
     "r2: B at 3 of 12 -> r4 'answer is B'"),
    ("The answer is clearly B, since the animal in this picture has whiskers.", "pets", "C",
     "r2: B at 4 of 13 -> r4 takes the first 'answer is c' (of 'clearly'); was: B"),
    # --- refusals, Z, the API-failure marker
    ("Sorry, I can't help with images of people yet.", "pets", None, "r1"),
    ("Cannot determine the answer from the image, maybe B.", "pets", None, "r1 before r2; was: B"),
    ("Z", "pets", None, "r3"),
    ("None of them, Z.", "pets", None, "r3"),
    (f"{API_FAILURE}. cat", "pets", "B", "r0 -> r5: 36 characters, only 'cat'"),
    (f"{API_FAILURE}. B", "pets", None, "r0 skips r2; r5 no text; was: B"),
    # --- option texts (r5)
    ("cat", "pets", "B", "r5"),
    ("DOG", "pets", "A", "r5 compares lower-cased; 'hot dog' does not occur"),
    ("a cat", "pets", "B", "lower-case 'a' is no letter; r5 'cat'"),
    ("A cat", "pets", "A", "r2: 'A' is a letter token (no article rule); was: B"),
    ("A cat is shown.", "pets", "A", "r2: A at 0 of 4 (issue 25); was: B"),
    ("Vitamin C", "vitamins", "C", "r2: C is a token, last of 2 (issue 25); was: B"),
    ("Vitamin C", "pets", "C", "r2: C last of 2"),
    ("vitamin c", "vitamins", "B", "lower-case c is no letter; r5 only 'vitamin c'"),
    ("hot dog", "pets", None, "r5: 'dog' and 'hot dog' both occur (issue 25); was: D"),
    ("It is a hot dog", "pets", None, "r5: 'dog' and 'hot dog' both occur; was: D"),
    ("dark red", "shades", None, "r5: 'red' and 'dark red' both occur; was: B"),
    ("red", "shades", "A", "r5: 'dark red' does not occur in 'red'"),
    ("a dog and a cat", "pets", None, "r5: two texts"),
    ("Based on the image, a dog", "pets", "A", "'Based' is no token B; r5 'dog' (25 characters)"),
    ("category", "pets", "B", "r5: 'cat' occurs inside the word; was: None"),
    ("Not sure", "yesno", "B", "r5: 'no' occurs inside 'not' (8 characters); was: None"),
    ("No.", "yesno", "B", "r5"),
    ("Yes, it is", "yesno", "A", "r5: 10 characters, at most 2 x 5"),
    ("Yes, it is.", "yesno", None, "r5 refused: 11 > 10 characters; was: A"),
    ("The circle is red", "colours", "A", "r5: 17 characters, only 'red'"),
    ("It is green, not blue", "colours", None, "r5: two texts"),
    (LONG_DOG, "pets", None, "long reply: no letter token; r5 refused, 69 > 44 (issue 25); was: A"),
    # --- nothing
    ("nothing here", "pets", None, "no letter, no text"),
    ("", "pets", None, "empty reply"),
    ("   \n", "pets", None, "only whitespace"),
]


def test_the_table_is_large_and_covers_the_issue_cases() -> None:
    assert len(TABLE) >= 40
    replies = {reply for reply, *_ in TABLE}
    assert {"A cat is shown.", "Vitamin C", "hot dog", LONG_DOG, LONG_B_FIRST, ""} <= replies


@pytest.mark.parametrize(("reply", "options", "verdict", "rule"), TABLE,
                         ids=[f"{n:02d}-{row[0][:24]!r}" for n, row in enumerate(TABLE)])
def test_vlmevalkit_verdict(reply: str, options: str, verdict: str | None, rule: str) -> None:
    assert extract_choice(reply, OPTIONS[options]) == verdict, rule


def test_refusal_and_z_are_decided_but_unreadable_is_not() -> None:
    pets = OPTIONS["pets"]
    assert infer_choice("Z", pets) == NO_ANSWER
    assert infer_choice("Cannot determine the answer", pets) == NO_ANSWER
    assert infer_choice("hot dog", pets) is None


# --- the judge hook


class RecordingJudge:
    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, dict, str]] = []

    def __call__(self, question: str, options, reply: str) -> str:
        self.calls.append((question, dict(options), reply))
        return self.replies.pop(0)


def test_judge_is_asked_only_when_the_rules_leave_a_reply_undecided() -> None:
    pets = OPTIONS["pets"]
    judge = RecordingJudge("D")
    assert extract_choice("B", pets, judge=judge, question="Q?") == "B"
    assert extract_choice("Z", pets, judge=judge) is None  # decided: never sent to the judge
    assert extract_choice("Cannot determine the answer", pets, judge=judge) is None
    assert judge.calls == []
    assert extract_choice("hot dog", pets, judge=judge, question="What is it?") == "D"
    assert judge.calls == [("What is it?", pets, "hot dog")]


def test_judge_replies_read_by_the_rules_three_attempts() -> None:
    pets = OPTIONS["pets"]
    judge = RecordingJudge(f"{API_FAILURE}: B", "I cannot tell", "Answer: C")
    assert judge_choice(judge, "Q?", pets, "hot dog") == "C"
    assert len(judge.calls) == 3
    failing = RecordingJudge("unclear", "unclear", "unclear", "A")
    assert judge_choice(failing, "Q?", pets, "hot dog") is None  # no random letter after three failures
    assert len(failing.calls) == 3
    assert judge_choice(RecordingJudge("Z"), "Q?", pets, "hot dog") is None


def _bench(tmp_path: Path, rows: list[dict], **kwargs) -> MMBench:
    return MMBench(write_tsv(tmp_path / "mmbench.tsv", rows), **kwargs)


def test_mmbench_does_not_call_a_judge_unless_given(tmp_path: Path, mmbench_rows: list[dict],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from bettersynth.eval import choice

    def no_judge(*args, **kwargs):
        raise AssertionError("judge_choice called without a judge")

    monkeypatch.setattr(choice, "judge_choice", no_judge)
    bench = _bench(tmp_path, mmbench_rows)
    assert bench.judge is None
    result = bench.score({q: "hot dog, or maybe not" for q in bench.question_ids()})
    assert all(r["answer"] is None for r in result.records)


def test_mmbench_judge_hook(tmp_path: Path, mmbench_rows: list[dict]) -> None:
    judge = RecordingJudge(*["A"] * 20)
    bench = _bench(tmp_path, mmbench_rows, judge=judge)
    predictions = {q: "B" for q in bench.question_ids()}
    predictions["0"] = "something unreadable"
    predictions["1"] = "Z"
    record = {r["question_id"]: r for r in bench.score(predictions).records}
    assert judge.calls == [("What colour is the circle?", {"A": "red", "B": "blue", "C": "green", "D": "yellow"},
                            "something unreadable")]
    assert record["0"]["answer"] == "A" and record["0"]["score"] == 1.0 and record["1"]["answer"] is None


def test_mmbench_test_split_never_asks_the_judge(tmp_path: Path, mmbench_rows: list[dict]) -> None:
    judge = RecordingJudge()
    columns = ["index", "question", "hint", "A", "B", "C", "D", "image"]
    bench = MMBench(write_tsv(tmp_path / "test.tsv", mmbench_rows, columns), judge=judge)
    bench.score({q: "unreadable" for q in bench.question_ids()})
    assert judge.calls == []


# --- CircularEval groups and the single pass


def _answers(bench: MMBench, wrong: set[int] = frozenset()) -> dict[str, str]:
    out = {}
    for row in bench.rows:
        letter = row.answer if row.index not in wrong else next(x for x in row.options if x != row.answer)
        out[str(row.index)] = letter
    return out


def test_circular_drops_a_group_made_only_of_rotated_copies(tmp_path: Path, mmbench_rows: list[dict]) -> None:
    rows = [row for row in mmbench_rows if row["index"] != 2]  # question 2 keeps its copies 1000002, 2000002
    bench = _bench(tmp_path, rows)
    result = bench.score(_answers(bench, wrong={2_000_002}))
    # groups 0 and 1 right; group 2 (wrong in a copy) has no original row and is not counted
    assert result.metrics["mmbench_circular"] == 100.0
    assert [row["category"] for row in result.tables["mmbench_category"]] == ["colour", "ocr"]
    assert sum(row["questions"] for row in result.tables["mmbench_category"]) == 2
    copies_only = _bench(tmp_path, [row for row in mmbench_rows if row["index"] >= 1_000_000])
    assert "mmbench_circular" not in copies_only.score(_answers(copies_only)).metrics


def test_circular_needs_every_row_of_a_group(tmp_path: Path, mmbench_rows: list[dict]) -> None:
    bench = _bench(tmp_path, mmbench_rows)
    result = bench.score(_answers(bench, wrong={3_000_000}))  # the last rotation of question 0
    assert result.metrics["mmbench_circular"] == pytest.approx(200 / 3)
    # a shard without some rotations: the group is judged on the rows it has
    partial = bench.score({q: a for q, a in _answers(bench, wrong={3_000_000}).items() if q != "3000000"},
                          allow_missing=True)
    assert partial.metrics["mmbench_circular"] == 100.0


def test_single_pass_counts_index_up_to_and_including_one_million(tmp_path: Path,
                                                                  mmbench_rows: list[dict]) -> None:
    bench = _bench(tmp_path, mmbench_rows)
    # rows 0, 1, 2 and 1000000 (index <= 1e6, as VLMEvalKit selects circ0); 1000001 and up are not
    result = bench.score(_answers(bench, wrong={1_000_000}))
    assert result.metrics["mmbench_single"] == 75.0
    untouched = bench.score(_answers(bench, wrong={1_000_001, 2_000_000}))
    assert untouched.metrics["mmbench_single"] == 100.0
    colour = next(r for r in result.tables["mmbench_category"] if r["category"] == "colour")
    assert colour["single"] == 50.0 and colour["circular"] == 0.0


def test_circular_category_is_the_original_rows(tmp_path: Path, mmbench_rows: list[dict]) -> None:
    for row in mmbench_rows:
        if row["index"] == 1_000_001:
            row["category"] = "elsewhere"  # a copy filed under another category
    bench = _bench(tmp_path, mmbench_rows)
    table = {r["category"]: r for r in bench.score(_answers(bench)).tables["mmbench_category"]}
    assert table["ocr"]["questions"] == 1 and "elsewhere" not in table
