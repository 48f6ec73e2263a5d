"""Pictures of a data step that people look at before they trust a filter.

Why: counts say how many samples a recipe dropped, not *which*; a grid of
thumbnails with their captions and scores (kept, filtered, re-captioned) and
a histogram of each filter's stat with its bounds show whether the threshold
cuts where it should.

Example::

    cards = pick_cards(Path("seed"), Path("out/filtered"), per_kind=6)
    render_sample_sheet(cards, Path("sample_sheet.png"))
    render_stat_histograms(stat_values(Path("out/filtered"), ["image_text_similarity"]), Path("stats.png"))
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import read_jsonl

log = logging.getLogger(__name__)

Kind = Literal["kept", "filtered", "re-captioned"]
KINDS: tuple[Kind, ...] = ("kept", "filtered", "re-captioned")
COLOURS = {"kept": "#1a7f37", "filtered": "#cf222e", "re-captioned": "#0969da"}
THUMB = 96  # thumbnail side in pixels


@dataclass(frozen=True)
class Card:
    """One cell of the sheet: a sample, what happened to it, and why."""

    kind: Kind
    sample_id: str
    image: Path | None  # first image of the sample, None if it has none
    caption: str
    note: str  # scores, or the filter and bound that dropped it, or the caption it replaced


def _samples(path: Path) -> dict[str, Sample]:
    if not path.exists():
        return {}
    return {item.id: item for item in read_jsonl(path) if isinstance(item, Sample)}


def _records(path: Path) -> list[dict[str, Any]]:
    """The step's ``outcomes.jsonl`` (written by the runner, so every line is a JSON object)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:3]) + (", …" if len(value) > 3 else "") + "]"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _caption(sample: Sample) -> str:
    return " | ".join(text for text, _ in sample.chunks())


def _image(root: Path, sample: Sample) -> Path | None:
    return root / sample.images[0] if sample.images else None


def _spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over the list (all of them when there are fewer)."""
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else items[:1]


def pick_cards(input_dir: Path, out_dir: Path, per_kind: int = 6) -> list[Card]:
    """Up to ``per_kind`` samples of each kind, from a step's input folder and its output folder.

    Reads ``outcomes.jsonl`` (every input's fate) and both ``samples.jsonl``
    files; filtered samples are drawn from the input, kept and re-captioned
    ones from the output, so each card shows the bytes that kind refers to.
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    inputs, outputs = _samples(input_dir / "samples.jsonl"), _samples(out_dir / "samples.jsonl")
    outcomes = _records(out_dir / "outcomes.jsonl")
    by_kind: dict[str, list[Card]] = {kind: [] for kind in KINDS}
    for record in sorted(outcomes, key=lambda r: str(r.get("id"))):
        sample_id = record.get("id")
        if record.get("status") == "kept" and sample_id in outputs:
            sample = outputs[sample_id]
            source = inputs.get(record.get("source_id", ""))
            if source is not None:
                by_kind["re-captioned"].append(
                    Card("re-captioned", sample_id, _image(out_dir, sample), _caption(sample), f"was: {_caption(source)}")
                )
            elif "source_id" not in record:
                scores = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(sample.stats.items()))
                by_kind["kept"].append(Card("kept", sample_id, _image(out_dir, sample), _caption(sample), scores))
        elif record.get("status") == "filtered" and not record.get("replaced_by") and sample_id in inputs:
            sample = inputs[sample_id]
            note = f"{record.get('op')}: {record.get('stat')}={_fmt(record.get('value'))} ({record.get('bound')})"
            by_kind["filtered"].append(Card("filtered", sample_id, _image(input_dir, sample), _caption(sample), note))
    return [card for kind in KINDS for card in _spread(by_kind[kind], per_kind)]


def _thumbnail(path: Path | None):
    """The image as a small RGB array; a grey tile when it is missing or unreadable (named in the log)."""
    import numpy as np
    from PIL import Image

    if path is not None:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((THUMB, THUMB))
                return np.asarray(image)
        except (OSError, ValueError) as exc:
            log.warning("sample sheet: %s: cannot read image (%s); showing a grey tile", path, exc)
    return np.full((THUMB, THUMB, 3), 200, dtype=np.uint8)


def render_sample_sheet(cards: Sequence[Card], path: Path, columns: int = 6, title: str = "") -> Path:
    """Draw ``cards`` as a grid, one row block per kind, and save a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows_per_kind = {kind: -(-sum(c.kind == kind for c in cards) // columns) for kind in KINDS}
    rows = max(1, sum(rows_per_kind.values()))
    figure = Figure(figsize=(columns * 2.3, rows * 3.1 + 0.4))
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title, fontsize=10)
    row = 0
    for kind in KINDS:
        kind_cards = [c for c in cards if c.kind == kind]
        for index, card in enumerate(kind_cards):
            axes = figure.add_subplot(rows, columns, (row + index // columns) * columns + index % columns + 1)
            axes.imshow(_thumbnail(card.image))
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_edgecolor(COLOURS[kind])
                spine.set_linewidth(3)
            axes.set_title(f"{kind}: {card.sample_id}", fontsize=7, color=COLOURS[kind])
            text = textwrap.fill(card.caption, 34, max_lines=4, placeholder=" …")
            note = textwrap.fill(card.note, 34, max_lines=3, placeholder=" …")
            axes.text(0.5, -0.04, f"{text}\n{note}", transform=axes.transAxes, ha="center", va="top", fontsize=5.5)
        row += rows_per_kind[kind]
    if not cards:
        figure.text(0.5, 0.5, "no samples", ha="center", va="center")
    figure.subplots_adjust(hspace=1.1, wspace=0.15, top=0.93 if title else 0.97, bottom=0.1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _numbers(value: Any) -> list[float]:
    values = value if isinstance(value, list) else [value]
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


BOUND = re.compile(r"^\w+=(-?[0-9.eE+-]+|inf|-inf)$")


def stat_values(out_dir: Path, stat_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per stat: values of samples kept (output ``samples.jsonl``), of samples it filtered
    (``outcomes.jsonl``), and the bounds that decided."""
    out_dir = Path(out_dir)
    table = {key: {"kept": [], "filtered": [], "bounds": set()} for key in stat_keys}
    for sample in _samples(out_dir / "samples.jsonl").values():
        for key in stat_keys:
            if key in sample.stats:
                table[key]["kept"].extend(_numbers(sample.stats[key]))
    for record in _records(out_dir / "outcomes.jsonl"):
        key = record.get("stat")
        if record.get("status") == "filtered" and key in table:
            table[key]["filtered"].extend(_numbers(record.get("value")))
            match = BOUND.match(str(record.get("bound") or ""))
            if match:
                table[key]["bounds"].add(float(match.group(1)))
    return {key: {**row, "bounds": sorted(row["bounds"])} for key, row in table.items()}


def render_stat_histograms(values: dict[str, dict[str, Any]], path: Path, bins: int = 20) -> Path:
    """One histogram per stat, kept stacked on filtered, bounds as dashed lines; saved as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(values) or ["(no filter stats)"]
    figure = Figure(figsize=(4.2 * len(keys), 3.2))
    FigureCanvasAgg(figure)
    for index, key in enumerate(keys):
        axes = figure.add_subplot(1, len(keys), index + 1)
        row = values.get(key, {"kept": [], "filtered": [], "bounds": []})
        series = [(row["kept"], "kept", COLOURS["kept"]), (row["filtered"], "filtered", COLOURS["filtered"])]
        series = [s for s in series if s[0]]
        if series:
            axes.hist([s[0] for s in series], bins=bins, stacked=True, label=[s[1] for s in series], color=[s[2] for s in series])
            axes.legend(fontsize=7)
        for bound in row["bounds"]:
            axes.axvline(bound, color="black", linestyle="--", linewidth=1)
        axes.set_title(key, fontsize=9)
        axes.set_xlabel("value", fontsize=8)
        axes.set_ylabel("samples", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_step_pictures(input_dir: Path, out_dir: Path, stat_keys: Sequence[str], target: Path, title: str = "") -> list[Path]:
    """The sample sheet, the stat histograms and their numbers (json) for one data step, under ``target``."""
    target = Path(target)
    values = stat_values(out_dir, stat_keys)
    numbers = target / "stat_values.json"
    numbers.parent.mkdir(parents=True, exist_ok=True)
    numbers.write_text(json.dumps(values, indent=1))
    return [
        render_sample_sheet(pick_cards(input_dir, out_dir), target / "sample_sheet.png", title=title),
        render_stat_histograms(values, target / "stat_histograms.png"),
        numbers,
    ]
