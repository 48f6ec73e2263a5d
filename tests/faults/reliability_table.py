"""Write the reliability table (README.md, reliability section) from the fault suite's JUnit XML.

Why generated: the table says which faults were survived and what each cost on
the machine that ran ``make test-faults``; a hand-kept table drifts.

Example::

    python tests/faults/reliability_table.py build/faults.xml --output build/reliability.md --readme README.md

With ``--readme`` the table replaces what stands between the file's
``<!-- reliability:begin -->`` and ``<!-- reliability:end -->`` lines.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path


def rows(junit: Path) -> list[tuple[str, str, float]]:
    """(case, outcome, seconds) for every test case in the report, in run order."""
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "survived"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "FAILED"
            elif child.tag == "skipped":  # an expected failure (xfail) is a fault not survived, not a skip
                known = child.get("type") == "pytest.xfail"
                outcome = ("not survived (known): " if known else "skipped: ") + " ".join((child.get("message") or "").split())[:120]
        name, _, params = case.get("name", "").removeprefix("test_faults_").partition("[")
        name = name.replace("_", " ") + (f" [{params}" if params else "")
        found.append((f"{case.get('classname', '').rsplit('.', 1)[-1].removeprefix('test_faults_')}: {name}",
                      outcome, float(case.get("time") or 0)))
    return found


def table(found: list[tuple[str, str, float]]) -> str:
    survived = sum(outcome == "survived" for _, outcome, _ in found)
    ran = sum(not outcome.startswith("skipped") for _, outcome, _ in found)
    lines = [f"{survived} of {ran} fault cases survived ({len(found) - ran} skipped).", "",
             "| case | outcome | seconds |", "|---|---|---:|"]
    lines += [f"| {case} | {outcome} | {seconds:.1f} |" for case, outcome, seconds in found]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def into_readme(readme: Path, text: str) -> None:
    """Put ``text`` between the markers of ``readme``; a readme without them is refused by name."""
    content = readme.read_text(encoding="utf-8")
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} lines to put the table between")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path, help="pytest --junitxml output of tests/faults")
    parser.add_argument("--output", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--readme", type=Path, help="also put the table between this file's reliability markers")
    args = parser.parse_args()
    found = rows(args.junit)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table(found), encoding="utf-8")
    if args.readme:
        into_readme(args.readme, table(found))
    print(table(found))
    return 0 if all(outcome != "FAILED" for _, outcome, _ in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
