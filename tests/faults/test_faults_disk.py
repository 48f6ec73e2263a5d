"""A disk that fills while a data step writes its output folder: the step ends in one line naming
ENOSPC and the folder, nothing truncated carries a final name, and once there is room the rerun
finishes from its last chunk with the bytes of an uninterrupted run on an ordinary folder.

The full disk is real: a size-limited tmpfs (root only: mount), grown by remounting it.
"""

from __future__ import annotations

import errno
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from fault_services import size_limited_folder
from robust_data import clean_dataset

from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe
from bettersynth.recipes.step_files import OUTPUTS, REPORT, RESUME_DIR

CHUNK = 6
RECIPE = {"name": "disk", "use_cache": False, "process": [  # no score cache: both runs compute every score
    {"words_num_filter": {"min_num": 3}},
    {"image_shape_filter": {"min_width": 11}},
]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Recipe]:
    root = tmp_path_factory.mktemp("disk-data")
    clean_dataset(root, 90)
    recipe = root.parent / f"{root.name}-recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    return root, Recipe.load(recipe)


def _run(dataset: tuple[Path, Recipe], out: Path):
    root, recipe = dataset
    return run_recipe(recipe, root / "samples.jsonl", root, out, chunk_size=CHUNK, num_workers=1)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("disk-reference") / "out"
    _run(dataset, out)
    return _files(out)


@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs: room for a few chunks of the output, not all of it; skipped where mount is refused."""
    with size_limited_folder(tmp_path / "disk", "96k") as folder:
        yield folder


def test_faults_disk_full_during_data_step(dataset, uninterrupted, small_disk):
    out = small_disk / "out"
    assert sum(map(len, uninterrupted.values())) > 96 * 1024 // 4  # the output cannot fit (a file takes a 4 KiB page)
    with pytest.raises(OSError) as err:
        _run(dataset, out)
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC and "\n" not in message
    assert f"step output {out} not written: no space left on device (ENOSPC" in message
    assert re.search(r"; \d+ completed chunk\(s\) kept in ", message) and message.endswith("rerun to resume")
    left = _files(out)
    assert not any(name in left for name in (*OUTPUTS, REPORT))  # no output under its final name yet
    assert not [name for name in left if name.endswith(".partial")]  # a half-copied image gave its space back
    for name, data in left.items():  # every image under its final name is whole
        if name.startswith("images/"):
            assert data == uninterrupted[name], name
    assert any(name.startswith(f"{RESUME_DIR}/") for name in left)  # the completed chunks are kept

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    report = _run(dataset, out)
    assert report.n_in == 90 and report.kept + report.filtered + report.rejected - report.added_kept == 90
    assert _files(out) == uninterrupted
