"""Every benchmark script runs end to end at a tiny size, so none rots; the harness's arithmetic holds.

Speed itself is never asserted here (that is what the scripts are for): these
check that each script measures what it names, writes its ratios, and that
the combined table reads them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from harness import Contender, compare, markdown, run_rounds, write_json  # noqa: E402


def run_script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "load average before:" in done.stdout and "load average after:" in done.stdout
    return done


def ratios(path: Path) -> dict[tuple[str, str, str, str], dict]:
    data = json.loads(path.read_text())
    assert data["command"].startswith("python benchmarks/") and data["load_before"] and data["machine"]
    return {(r["label"], r["subject"], r["baseline"], r["metric"]): r for r in data["ratios"]}


def test_bench_harness_interleaves_fresh_processes_and_pairs_rounds(tmp_path):
    log = tmp_path / "order.txt"
    script = ("import json, os, sys; open(sys.argv[2], 'a').write(sys.argv[1] + str(os.getpid()) + '\\n'); "
              "print('noise'); print('RESULT ' + json.dumps({'seconds': float(sys.argv[3])}))")
    contenders = [Contender("a", [sys.executable, "-c", script, "a", str(log), "2"]),
                  Contender("b", [sys.executable, "-c", script, "b", str(log), "4"])]
    results = run_rounds(contenders, 3, verbose=False)
    order = log.read_text().split()
    assert [entry[0] for entry in order] == list("ababab")
    assert len(set(order)) == 6  # a fresh process every time
    ratio = compare(results, "a", "b", "seconds", "<=", 0.6, "toy")
    assert ratio.per_round == [0.5, 0.5, 0.5] and ratio.met
    assert not compare(results, "b", "a", "seconds", "<=", 1.3).met
    write_json(tmp_path / "toy.json", "Toy", "python benchmarks/toy.py", [ratio], "0.1 0.1 0.1")
    table = markdown([tmp_path / "toy.json"])
    assert "| toy | a / b | seconds | 0.500 | 0.500-0.500 | 3 | <= 0.6 | yes |" in table
    assert "`python benchmarks/toy.py`" in table and "0.1 0.1 0.1 before" in table


def test_bench_harness_names_a_failing_contender(tmp_path):
    broken = Contender("broken", [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    with pytest.raises(RuntimeError, match=r"'broken' failed \(exit 3\).*boom"):
        run_rounds([broken], 1, verbose=False)


def test_bench_soup_runs_tiny(tmp_path):
    out = tmp_path / "soup.json"
    run_script("bench_soup.py", "--size-mb", "8", "--counts", "2", "--rounds", "1", "--workdir", str(tmp_path),
               "--json", str(out))
    found = ratios(out)
    for baseline in ("read", "running_sum"):
        assert found["soup N=2, 8 MiB", "streamed", baseline, "seconds"]["median"] > 0
    assert found["soup N=2, 8 MiB", "streamed", "checkpoint", "grow_mb"]["target"] == 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["soup.json"]  # checkpoints deleted


def test_bench_memory_runs_tiny(tmp_path):
    out = tmp_path / "memory.json"
    done = run_script("bench_memory.py", "--sizes", "40", "80", "--rounds", "1", "--workdir", str(tmp_path),
                      "--json", str(out))
    found = ratios(out)
    assert ("data step, 80 samples", "ours-80", "plain-80", "seconds") in found
    assert found["data step peak RSS", "ours-80", "ours-40", "peak_mb"]["target"] == 1.2
    assert "kept" in done.stdout  # both contenders kept the same samples, or the script fails


def test_bench_merge_runs_tiny(tmp_path):
    out = tmp_path / "merge.json"
    done = run_script("bench_merge.py", "--rows", "200", "400", "--shards", "3", "--rounds", "1", "--workdir",
                      str(tmp_path), "--json", str(out))
    found = ratios(out)
    assert ("merge, 400 rows, 3 shards", "ours-400", "plain-400", "seconds") in found
    assert found["merge peak RSS", "ours-400", "ours-200", "peak_mb"]["target"] == 1.2
    assert "kept 359" in done.stdout  # 400 rows: 40 filtered, 1 rejected, the repeated id dropped by both


@pytest.mark.slow
def test_bench_ops_runs_pico(tmp_path):
    out = tmp_path / "ops.json"
    done = run_script("bench_ops.py", "--pico", "--samples", "6", "--image-size", "64", "--batch-size", "4",
                      "--num-workers", "0", "--rounds", "1", "--workdir", str(tmp_path), "--json", str(out))
    assert "data-juicer: skipped" in done.stdout
    found = ratios(out)
    assert found["image_text_similarity, 6 unique captions (ours-w0)", "ours-w0", "bare", "samples_per_s"]["target"] == 0.9


@pytest.mark.slow
def test_bench_train_runs_tiny(tmp_path):
    out = tmp_path / "train.json"
    run_script("bench_train.py", "--samples", "32", "--rounds", "1", "--threads", "1", "--json", str(out))
    found = ratios(out)
    assert found["train stage 2, 32 samples", "ours", "plain", "samples_per_s"]["target"] == 0.95


@pytest.mark.slow
def test_bench_step_start_runs_one_module(tmp_path):
    out = tmp_path / "step_start.json"
    run_script("bench_step_start.py", "--rounds", "1", "--modules", "bettersynth.steps.register", "--json", str(out))
    assert ("exit of bettersynth.steps.register", "frozen", "baseline", "exit_seconds") in ratios(out)


def test_bench_variants_runs_tiny(tmp_path):
    out = tmp_path / "variants.json"
    done = run_script("bench_variants.py", "--samples", "100", "--rounds", "1", "--workdir", str(tmp_path), "--json", str(out))
    found = ratios(out)
    assert found["manifest: child (2 % changed) / parent", "manifest child", "manifest parent", "bytes"]["target"] == 0.05
    assert ("child, 100 samples", "manifest", "copy", "child_pushed") in found
    assert "files pushed" in done.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["variants.json"]  # data and projects deleted
