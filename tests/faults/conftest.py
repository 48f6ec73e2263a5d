"""The fault tests reuse the real servers of the tracking tests and the datasets of the robustness tests."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for helpers in ("tracking", "robustness"):  # tracking_servers.py, robust_data.py
    if str(TESTS / helpers) not in sys.path:
        sys.path.insert(0, str(TESTS / helpers))


def _training_fixtures():
    """The training tests' session fixtures (pico LLaVA, captioned images, chats), shared rather than rebuilt."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_fixtures", TESTS / "train" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_train = _training_fixtures()
image_root, caption_records, chat_records, llava_dir = (
    _train.image_root, _train.caption_records, _train.chat_records, _train.llava_dir)
