"""One small quickstart pipeline in a process of its own, for the load test (``test_faults_load``).

Why a process each: eight pipelines at once must be eight clients, each with
its own MLflow client state, kfp.local runner and workspace, as eight users
or eight cluster runs would be; threads in one interpreter would share them.

Example::

    python tests/faults/load_pipeline.py --workspace /tmp/ws1 --tracking-uri http://127.0.0.1:5000 \
        --experiment load --model load-vlm --summary /tmp/ws1/summary.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bettersynth_demo.quickstart import QuickstartConfig, run_quickstart
from bettersynth_demo.world import WorldConfig

# The tracking tests' pipeline world (tests/tracking/conftest.py): the smallest one every step still runs on.
LOAD_WORLD = WorldConfig(n_seed_samples=40, n_instruct=16, n_textvqa=6, n_mmbench=4, n_heldout_textvqa=4, n_heldout_mmbench=3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--model", required=True, help="registered model the pipeline's versions go to")
    parser.add_argument("--summary", type=Path, required=True, help="JSON file: parent run, versions, seconds")
    args = parser.parse_args()
    started = time.monotonic()
    summary = run_quickstart(QuickstartConfig(
        workspace=args.workspace, seeds=[0], world=LOAD_WORLD, soup_methods=("uniform",),
        tracking_uri=args.tracking_uri, experiment=args.experiment, registered_model=args.model))
    args.summary.write_text(json.dumps({
        "parent_run_id": summary.parent_run_id, "experiment_id": summary.experiment_id,
        "versions": [row["version"] for row in summary.registry], "pipeline_seconds": summary.wall_seconds,
        "process_seconds": time.monotonic() - started}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
