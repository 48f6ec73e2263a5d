"""The MLflow UI as a person opens it after the quickstart: headless Chromium against a real ``mlflow server``.

The pipeline is the session's (``pipeline_run`` in conftest.py: one seed, one uniform soup,
logged to the sqlite server). The browser is Debian's ``chromium`` driven through its
``chromedriver`` by Selenium (no browser download); without them the browser test skips,
saying so. Screenshots go to the test's tmp folder; their paths are printed. What counts is
what the page renders at this window size: a name or a score "reads" when its text is laid
out inside its cell and the table's visible part, not cut by an ellipsis or the scroll edge.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bettersynth.reports.summary import look_further
from bettersynth.tracking.runs import STEP_TAG, dvc_dataset_inputs
from bettersynth.tracking.ui import RUN_NOTE_TAG, RUNS_VIEW_KEY, RUNS_VIEW_NAME, VIEW_TAG_PREFIX

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,1000")
RECIPE = "quickstart-filter"  # the cleaning recipe: the parent run's name starts with it
CHAIN = "quickstart-filter+quickstart-recaption"
# How the page lays out ``part`` of the text of the ``root`` element whose text is ``cell`` (or,
# with no ``cell``, starts with ``part``): whether its element is cut (ellipsis), whether ``part``
# ends inside what that element shows and inside the table's visible part (or the window), and
# its bottom against the window's height. Reading the layout, not the DOM's strings.
LAID_OUT = """
const [cell, part, root] = arguments;
const seen = e => (e.innerText || "").replace(/\u00a0/g, " ").trim();  // as Selenium reads it: no-break spaces plain
const all = [...document.querySelectorAll(root)];
const hit = all.find(e => cell === null ? seen(e).startsWith(part) : seen(e) === cell);
if (!hit) return null;
const walker = document.createTreeWalker(hit, NodeFilter.SHOW_TEXT);
let node; while ((node = walker.nextNode()) && !node.data.includes(part)) {}
if (!node) return null;
const at = node.data.indexOf(part), range = document.createRange();
range.setStart(node, at); range.setEnd(node, at + part.length);
let holder = node.parentElement;  // the nearest box that lays the text out (an inline span has no width)
while (holder.clientWidth === 0 && holder !== hit) holder = holder.parentElement;
const box = range.getBoundingClientRect(), left = holder.getBoundingClientRect().left;
const pane = hit.closest('.ag-center-cols-viewport, .ag-body-viewport');
const edge = pane ? pane.getBoundingClientRect().right : window.innerWidth;
return {width: Math.round(box.width), shown: holder.clientWidth, cut: holder.scrollWidth > holder.clientWidth,
        fits: box.right <= Math.min(left + holder.clientWidth, edge) + 0.5, bottom: Math.round(box.bottom),
        height: window.innerHeight};
"""


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if not Path(path).is_file()]
    if missing:
        pytest.skip(f"MLflow UI not checked in a browser: Debian's {' and '.join(missing)} not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does it)")
    return chromium, driver


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_binaries()
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver, url: str, *expected: str, timeout: float = 60.0) -> str:
    """Open ``url`` and wait until the page shows every ``expected`` text; returns the page's text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(
            lambda d: all(text in d.find_element(By.TAG_NAME, "body").text for text in expected))
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        missing = [text for text in expected if text not in body]
        raise AssertionError(f"{url}: after {timeout:.0f}s the page lacks {missing}; it shows:\n{body[:3000]}") from None
    return driver.find_element(By.TAG_NAME, "body").text


def _shown(driver, text: str) -> bool:
    """Whether an element whose own text is ``text`` is on screen (not collapsed, not hidden)."""
    from selenium.webdriver.common.by import By

    literal = f"'{text}'" if "'" not in text else "concat('" + "', \"'\", '".join(text.split("'")) + "')"
    return any(e.is_displayed() for e in driver.find_elements(By.XPATH, f"//*[normalize-space(text())={literal}]"))


def _shot(driver, path: Path) -> Path:
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def _pipeline(request, sqlite_server, tracking_to):
    tracking_to(sqlite_server)
    workspace, summary = request.getfixturevalue("pipeline_run")
    client = MlflowClient()
    children = client.search_runs([summary.experiment_id], f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    return summary, client, {run.data.tags[STEP_TAG]: run for run in children}


def test_pipeline_run_records_what_the_ui_shows(request, sqlite_server, tracking_to, tmp_path):
    """The records behind the page: names, dataset inputs, the comparison on the parent, descriptions, the view."""
    summary, client, steps = _pipeline(request, sqlite_server, tracking_to)
    version = next(d for d in summary.datasets if d["step"] == "version-dataset")
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.run_name == f"{CHAIN} · quickstart"
    names = ("align-seed0", "train-seed0", "evaluate-seed0", "soup-uniform", "register-soup", "filter", "caption")
    assert {s: steps[s].info.run_name for s in names} == {
        "align-seed0": "seed 0 · align", "train-seed0": "seed 0", "evaluate-seed0": "seed 0 · eval",
        "soup-uniform": "soup uniform", "register-soup": "soup uniform · register",
        "filter": f"filter · {RECIPE}", "caption": "caption · quickstart-recaption"}
    for run in (parent, client.get_run(steps["align-seed0"].info.run_id), client.get_run(steps["train-seed0"].info.run_id)):
        (dataset,) = dvc_dataset_inputs(run)
        assert (dataset["name"], dataset["dataset_hash"]) == ("quickstart", version["dataset_hash"]), run.info.run_name
    assert steps["evaluate-seed0"].data.tags["mlflow.runType"] == "evaluation"  # the runs view opens its parent
    scores = {row["model"]: row for row in summary.models}
    line = f"TextVQA {scores['seed0']['textvqa']:.1f} · MMBench {scores['seed0']['mmbench_circular']:.1f}"
    assert steps["evaluate-seed0"].data.tags[RUN_NOTE_TAG] == line

    assert {a.path for a in client.list_artifacts(summary.parent_run_id, "comparison")} == {
        "comparison/compare.txt", "comparison/compare.png"}
    table = Path(client.download_artifacts(summary.parent_run_id, "comparison/compare.txt", str(tmp_path))).read_text()
    assert CHAIN in table and version["dataset_hash"] in table and "soup-uniform" in table

    mine = [v for v in client.search_model_versions("name='bettersynth-vlm'") if v.tags.get("pipeline.run") == summary.parent_run_id]
    for registered in mine:  # a few tags; the scores are in the description and on the source run
        assert not [key for key in registered.tags if key.startswith("metric.")], registered.tags
        source = client.get_run(registered.run_id)
        assert source.data.tags[RUN_NOTE_TAG] == registered.description and "textvqa_accuracy" in source.data.metrics
    soup = next(v for v in mine if v.tags.get("kind") == "soup")
    assert "- soup ingredients (uniform): seed 0 (weight 1.00" in soup.description
    model = client.get_logged_model(client.get_run(soup.run_id).data.tags["model.id"])
    assert model.source_run_id == soup.run_id and model.name == "soup-uniform"

    envelope = json.loads(client.get_experiment(summary.experiment_id).tags[VIEW_TAG_PREFIX + RUNS_VIEW_KEY])
    state = json.loads(envelope["state"])
    assert envelope["name"] == RUNS_VIEW_NAME and state["runsExpanded"][summary.parent_run_id] is True
    assert "attributes.`Description`" in state["selectedColumns"] and "metrics.`textvqa_accuracy`" in state["selectedColumns"]
    assert state["columnOrder"][:2] == ["attributes.`Run Name`", "attributes.`Description`"]


def _laid_out(driver, cell: str | None, part: str, root: str) -> dict:
    layout = driver.execute_script(LAID_OUT, cell, part, root)
    assert layout is not None, f"no {root} shows {cell or part!r}"
    return layout


def test_mlflow_ui_shows_which_recipe_made_which_model_and_its_scores(request, sqlite_server, tracking_to, tmp_path):
    """Open what the quickstart prints, as a person would, and click nothing."""
    _browser_binaries()  # skip before the pipeline runs when there is no browser
    summary, client, steps = _pipeline(request, sqlite_server, tracking_to)
    driver = request.getfixturevalue("browser")
    started = time.monotonic()
    dataset_hash = next(d["dataset_hash"] for d in summary.datasets if d["step"] == "version-dataset")
    scores = {row["model"]: row for row in summary.models}
    kept = next(d["kept"] for d in summary.datasets if d["step"] == "caption")
    (link,) = [line.split("open ", 1)[1] for line in look_further(summary, bin_prefix=".venv/bin/") if "open " in line]
    assert link.startswith(sqlite_server) and "workflowType=machine_learning" in link

    models = ["seed 0", "soup uniform"]  # the train and soup runs: a model each, its dataset, its scores
    names = [f"{CHAIN} · quickstart", *models, "seed 0 · eval", "soup uniform · eval"]
    text = _page_text(driver, link, "Run Name", "Dataset", "Description", *names)
    runs_png = _shot(driver, tmp_path / "mlflow-runs.png")
    assert "Observability" not in text and "No data available" not in text, "the GenAI view, not the training runs"
    assert "/runs" in driver.current_url and "workflowType=machine_learning" in driver.current_url
    assert RUNS_VIEW_NAME in text, "the saved view with descriptions and scores"
    cell = "[role=gridcell][col-id='attributes.`Run Name`'] a"
    for name in names:  # on screen without expanding anything: the parent opens with its runs
        assert _shown(driver, name), (name, runs_png)
    for name in models:  # whole, as MLflow's column width shows it
        layout = _laid_out(driver, name, name, cell)
        assert not layout["cut"] and layout["fits"], (name, layout, runs_png)
    for name in (f"{CHAIN} · quickstart", "seed 0 · eval", "soup uniform · eval"):
        layout = _laid_out(driver, name, name, cell)  # the recipe chain, the seed, the soup method: whole
        assert layout["fits"], (name, layout, runs_png)
    assert text.count(f"quickstart ({dataset_hash})") >= 3, runs_png  # the Dataset column: pipeline, align, train
    for model in ("seed0", "soup-uniform"):  # the Description column: a model's scores come first
        tvqa = f"TextVQA {scores[model]['textvqa']:.1f}"
        assert f"{tvqa} · MMBench {scores[model]['mmbench_circular']:.1f}" in text, (model, runs_png)
    for model in ("seed0", "soup-uniform"):  # both scores inside the cell and the visible part of the table
        line = f"TextVQA {scores[model]['textvqa']:.1f} · MMBench {scores[model]['mmbench_circular']:.1f}"
        layout = _laid_out(driver, None, line, "[role=gridcell][col-id='attributes.`Description`']")
        assert layout["fits"], (model, layout, runs_png)

    champion = client.get_model_version_by_alias("bettersynth-vlm", "champion")
    model = "seed 0" if champion.tags["kind"] == "finetune" else "soup uniform"
    row = scores["seed0" if model == "seed 0" else "soup-uniform"]
    scored = f"TextVQA {row['textvqa']:.1f} · MMBench {row['mmbench_circular']:.1f}"
    headline = f"{scored} · {model} · quickstart-filter + quickstart-recaption · {kept} kept samples"
    # the versions table shows a description's first 29 characters: the scores
    shown = headline if len(headline) <= 32 else headline[:29] + "..."
    _page_text(driver, f"{sqlite_server}/#/models/bettersynth-vlm", "Description", shown, "@ champion", "@ candidate")
    registry_png = _shot(driver, tmp_path / "mlflow-registered-model.png")
    assert scored in shown and _shown(driver, shown)
    for alias in ("@ champion", "@ candidate"):  # above the fold: no scrolling to find the model to use
        layout = _laid_out(driver, alias, alias.removeprefix("@ "), "*")
        assert layout["bottom"] <= layout["height"], (alias, layout, registry_png)

    text = _page_text(driver, f"{sqlite_server}/#/models/bettersynth-vlm/versions/{champion.version}",
                      headline, f"kept samples: {kept}", f"DVC hash {dataset_hash}", "Source Run")
    _shot(driver, tmp_path / "mlflow-model-version.png")
    assert client.get_run(champion.run_id).info.run_name in text  # the source run, by the name the runs view shows
    print(f"browser checks: {time.monotonic() - started:.1f} s")
