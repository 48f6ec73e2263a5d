"""What each pipeline step does, as plain functions over local paths.

Why: KFP components stay thin (parse artifacts, call one function here), so
every step is testable and runnable without KFP, and the same code serves the
local quickstart and the cluster.
"""

import atexit
import gc

# A step runs in a process of its own (a KFP pod, a kfp.local subprocess) that ends when the step
# returns. Python's last garbage collections at exit walk every object torch and transformers made:
# 0.3-1.4 s a step on 2 cores (benchmarks/bench_step_start.py), some 15 steps a pipeline run. Freezing
# them first skips that walk (the OS frees the memory anyway). Registered at first import, so it runs
# after every other exit handler.
atexit.register(gc.freeze)
