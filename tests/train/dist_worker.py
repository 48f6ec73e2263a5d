"""One data-parallel process of ``test_train_distributed`` (started by torchrun): train, then report as JSON."""

import json
import sys
from pathlib import Path

import torch

from bettersynth.train import defaults_for, train_stage
from bettersynth.train.deepspeed import DeepSpeedSettings
from bettersynth.train.engine import dist_info

if __name__ == "__main__":
    args = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(1)
    info = dist_info()
    config = defaults_for(args["stage"], **args["config"])  # world_size 1 here: the trainer adopts the group's
    result = train_stage(Path(args["model_dir"]), args["records"], Path(args["image_root"]), config,
                         Path(args["out_dir"]), checkpoint_dir=Path(args["checkpoint_dir"]),
                         stop_after_step=args.get("stop_after_step"),
                         deepspeed=DeepSpeedSettings(**args.get("deepspeed", {"enabled": "off"})))
    report = {"rank": info.rank, "world_size": info.world_size, "steps": result.steps, "losses": result.losses,
              "samples_seen": result.samples_seen, "completed": result.completed,
              "checksum": result.trainable_checksum, "engine": args.get("deepspeed", {}).get("enabled", "off")}
    Path(args["report_dir"], f"rank{info.rank}.json").write_text(json.dumps(report))
