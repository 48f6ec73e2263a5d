import pytest

from bettersynth.cli.main import COMMANDS, build_parser, main


def test_every_command_group_registers():
    parser = build_parser()
    subcommand = {"data": ["checkout", "x"], "algebra": ["cap", "src", "--n", "1", "--out", "o"], "analyze": ["r.yaml"],
                  "process": ["--config", "r.yaml"], "trainjob": ["--train-config", "t.yaml"]}
    for name in COMMANDS:
        assert parser.parse_known_args([name, *subcommand.get(name, [])])[0].command == name


def test_compile_writes_ir(tmp_path, capsys):
    out = tmp_path / "loop.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    assert "nvidia.com/gpu" in out.read_text()


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["quickstrat"])


def test_data_apply_names_a_missing_input_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    args = ["data", "apply", "--recipe", "recipes/quickstart_filter.yaml", "--input", str(missing),
            "--out", str(tmp_path / "out"), "--model-root", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"bettersynth data apply: input folder not found: {missing} (-v for the traceback)"]
    missing.mkdir()
    assert main(args) == 1
    assert f"input folder {missing} has no samples.jsonl" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="has no samples.jsonl"):
        main(["-v", *args])


def _summary(tmp_path, tracking_uri: str):
    from bettersynth.reports.summary import RunSummary

    return RunSummary(
        "a" * 32, "7", tmp_path / "work space", 12.0, tracking_uri=tracking_uri,
        datasets=[{"step": "filter", "in": 10, "kept": 8, "filtered": 2, "rejected": 0, "added": 0, "added_kept": 0,
                   "run_id": "f" * 32, "rounds": []},
                  {"step": "version-dataset", "variant": "quickstart", "dataset_hash": "3f2a" * 8 + ".dir", "run_id": "b" * 32}],
        models=[{"model": "seed0", "dataset_hash": "3f2a" * 8 + ".dir", "run_id": "c" * 32, "textvqa": 12.5,
                 "mmbench_circular": 25.0}],
    )


def test_summary_labels_run_ids_and_dvc_hashes(tmp_path):
    from bettersynth.reports.summary import format_summary

    lines = format_summary(_summary(tmp_path, "sqlite:///x.db"), "vlm").splitlines()
    header = next(line for line in lines if line.startswith("data step"))
    assert header.endswith("MLflow run") and "DVC" not in header
    assert f"dataset variant quickstart: DVC hash {'3f2a' * 8}.dir (MLflow run {'b' * 32})" in lines
    assert next(line for line in lines if line.startswith("model")).split() == ["model", "TextVQA", "MMBench(circ)", "DVC", "hash", "MLflow", "run"]


def test_summary_commands_run_as_printed_in_a_fresh_shell(tmp_path):
    """From the repository root, with nothing on PATH but the system's: no activated venv."""
    import os
    import shlex
    import subprocess
    from pathlib import Path

    from bettersynth.reports.summary import format_summary

    root = Path(__file__).resolve().parents[2]
    for tracking_uri, first in (("sqlite:///x.db", ".venv/bin/mlflow ui --backend-store-uri"),
                                ("http://127.0.0.1:5005", "open http://127.0.0.1:5005/#/experiments/7/runs?workflowType=machine_learning")):
        text = format_summary(_summary(tmp_path, tracking_uri), "vlm", bin_prefix=None if root == Path.cwd() else ".venv/bin/")
        commands = [line.strip() for line in text[text.index("Look further:"):].splitlines()[1:]]
        assert commands[0].startswith(first), commands
        if tracking_uri.startswith("sqlite"):
            assert commands[1] == ("then open http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                                   "&viewStateShareKey=bettersynth-models")
        else:
            assert f"--tracking-uri {tracking_uri}" in commands[1]
        runnable = [c for c in commands if c.startswith(".venv/bin/")]
        assert [shlex.split(c)[0] for c in runnable] == [".venv/bin/" + name for name in ("mlflow", "bettersynth", "bettersynth")][-len(runnable):]
        for command in runnable:  # each as printed, asked for its help: it starts, from here, without PATH
            name, *rest = shlex.split(command)
            probe = shlex.join([name, *rest[:2 if rest[:1] == ["data"] else 1], "--help"])
            done = subprocess.run(["/bin/sh", "-c", probe], cwd=root, env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (probe, done.stderr[-2000:])


def test_quickstart_commands_name_its_experiment_and_every_variant_and_run_in_a_fresh_shell(tmp_path):
    """What ``bettersynth quickstart`` prints last: the runs page, compare on its experiment, one checkout per recipe."""
    import os
    import shlex
    import subprocess
    from pathlib import Path

    from bettersynth.reports.summary import look_further_commands

    root = Path(__file__).resolve().parents[2]
    workspace = tmp_path / "a workspace"  # a space: every path must come out quoted
    hashes = ["3f2a" * 8 + ".dir", "b7c1" * 8 + ".dir", "3f2a" * 8 + ".dir"]
    commands = [line.strip() for line in look_further_commands(workspace, None, "7", hashes,
                                                               experiment="bettersynth-quickstart", bin_prefix=".venv/bin/")]
    assert commands[0] == f".venv/bin/mlflow ui --backend-store-uri {shlex.quote(f'sqlite:///{workspace}/mlflow.db')}"
    compare = shlex.split(commands[2])
    assert compare[1:] == ["compare", "--workspace", str(workspace), "--experiment", "bettersynth-quickstart",
                           "--chart", "compare.png"]
    checkouts = [shlex.split(c) for c in commands[3:]]
    assert [c[3] for c in checkouts] == sorted(set(hashes)) and all(c[5] == str(workspace) for c in checkouts)
    for command in (commands[0], commands[2], commands[3]):
        name, *rest = shlex.split(command)
        probe = shlex.join([name, *rest[:2 if rest[:1] == ["data"] else 1], "--help"])
        done = subprocess.run(["/bin/sh", "-c", probe], cwd=root, env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (probe, done.stderr[-2000:])
