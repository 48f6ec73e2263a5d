"""Nothing a data file, a model folder or a checkpoint carries gets executed.

A scan of the source for the dangerous calls (unpickling loads, unsafe YAML,
shell strings, remote code switched on), plus behaviour: a pickled payload in a
checkpoint is refused, and a model folder shipping its own code runs none of it.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from robust_data import clean_dataset

from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe

REPO = Path(__file__).resolve().parents[2]
SCANNED = [REPO / "src" / "bettersynth", REPO / "pipelines", REPO / "components"]
FORBIDDEN_CALLS = {
    ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all"),
    ("pickle", "load"), ("pickle", "loads"), ("os", "system"), ("os", "popen"), ("marshal", "loads"),
}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _python_files() -> list[Path]:
    return sorted(p for root in SCANNED if root.exists() for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(node: ast.AST) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def _findings(path: Path) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.relative_to(REPO)}:{node.lineno}"
        name = _dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in FORBIDDEN_CALLS:
            problems.append(f"{where}: {'.'.join(name)}")
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            problems.append(f"{where}: {node.func.id}()")
        if name == ("torch", "load"):
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        if name and name[0] == "subprocess" and name[1] in SUBPROCESS_CALLS:
            shell = keywords.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{where}: subprocess with shell")
            if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                problems.append(f"{where}: subprocess command built as a string")
        flag = keywords.get("trust_remote_code")
        if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False) and not isinstance(flag, ast.Attribute):
            problems.append(f"{where}: trust_remote_code from something other than a config field")
    return problems


def test_robust_source_has_no_unsafe_loads_shell_strings_or_remote_code():
    files = _python_files()
    assert len(files) > 50
    problems = [p for path in files for p in _findings(path)]
    assert problems == []


def test_robust_scan_catches_what_it_looks_for(tmp_path):
    """The scan is not vacuous: each pattern it forbids is found in a sample file."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, pickle, subprocess, torch, yaml\n"
        "yaml.load(open('r.yaml'))\npickle.loads(b'')\nos.system('ls ' + name)\n"
        "torch.load('x.pt')\ntorch.load('x.pt', weights_only=False)\n"
        "subprocess.run(f'convert {path}', shell=True)\nAutoModel.from_pretrained(p, trust_remote_code=True)\neval(text)\n"
    )
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        found = _findings(bad)
    finally:
        REPO = saved
    assert len(found) == 9, found


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_robust_checkpoint_with_pickled_code_is_refused(tmp_path):
    from bettersynth.train.checkpoint import (
        RNG_FILE,
        TrainerState,
        load_checkpoint,
        save_checkpoint,
    )

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "ckpts", TrainerState(step=1, total_steps=2, warmup_steps=0), model, optimizer)
    assert load_checkpoint(path, model, optimizer).step == 1
    marker = tmp_path / "pwned"
    torch.save({"torch": _Payload(marker)}, path / RNG_FILE)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        load_checkpoint(path, model, optimizer)
    assert not marker.exists()


def test_robust_model_folder_with_its_own_code_runs_none_of_it(tmp_path, pico_models):
    model = tmp_path / "models" / "clip"
    shutil.copytree(pico_models / "clip", model)
    marker = tmp_path / "pwned"
    (model / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n"
                                   "from transformers import CLIPModel as EvilModel, CLIPProcessor as EvilProcessor\n")
    for name in ("config.json", "preprocessor_config.json", "tokenizer_config.json", "processor_config.json"):
        if (model / name).is_file():
            data = json.loads((model / name).read_text())
            data["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoProcessor": "evil.EvilProcessor"}
            (model / name).write_text(json.dumps(data))
    data = tmp_path / "data"
    clean_dataset(data, 4)
    recipe = Recipe.from_dict({"process": [{"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}}]})
    try:
        report = run_recipe(recipe, data / "samples.jsonl", data, tmp_path / "out", model_root=tmp_path / "models", num_workers=0)
    except ValueError as exc:  # refusing the folder is as good as ignoring its code
        assert "trust_remote_code" in str(exc)
    else:
        assert report.kept == 4
    assert not marker.exists()


def test_robust_recipe_cannot_turn_on_remote_code():
    with pytest.raises(ValueError, match="trust_remote_code"):
        Recipe.from_dict({"process": [{"phrase_grounding_recall_filter": {"trust_remote_code": True}}]})


def test_robust_yaml_tags_that_build_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "r.yaml"
    path.write_text(f"process:\n  - !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        Recipe.load(path)
    assert not marker.exists()
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(path.read_text())
    assert os.path.exists(path)
