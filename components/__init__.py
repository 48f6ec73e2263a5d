"""KFP components of bettersynth: one folder per step, each a thin wrapper over ``bettersynth.steps``.

Only the standard library and ``kfp`` are imported at module level; the
component bodies import ``bettersynth`` at run time, inside the project image.
"""

import os

# The image every component runs in (built by the Dockerfiles); it carries the
# package and all model-loading code, so nothing is pip-installed at run time.
BASE_IMAGE = os.environ.get("BETTERSYNTH_IMAGE", "bettersynth:0.1.0")
