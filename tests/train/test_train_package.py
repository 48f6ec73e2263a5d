"""``bettersynth.train`` exports lazily, so the select-seeds step starts without the trainer's stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bettersynth import train


def test_every_exported_name_resolves() -> None:
    assert sorted(train.__all__) == sorted(train._EXPORTS)
    for name in train.__all__:
        assert getattr(train, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        train.no_such_name  # noqa: B018


def test_the_train_steps_module_loads_without_transformers() -> None:
    """select-seeds imports ``bettersynth.steps.train``; transformers + torchvision cost 5 s a process."""
    probe = "import sys, bettersynth.steps.train; print(sorted({'transformers', 'torchvision'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
