"""The component images' Dockerfiles, read without Docker: multi-stage, non-root, nothing installed at run time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCKERFILES = sorted(p for p in Path("docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|cmake|nvcc|cuda-toolkit|-devel)\b")


def stages(path: Path) -> list[list[str]]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_all_three_images_exist():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.gpu", "Dockerfile.cpu", "Dockerfile.mlflow"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_is_lean_and_non_root(path):
    all_stages = stages(path)
    assert len(all_stages) >= 2, "multi-stage build"
    final = all_stages[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "final stage runs as a non-root user"
    runs = " ".join(line for line in final if line.upper().startswith("RUN "))
    assert "pip install" not in runs and "uv pip" not in runs, "no package installs in the runtime stage"
    assert not BUILD_TOOLS.search(runs + " " + final[0]), "no build tools in the runtime stage"
    copies = [line for line in final if line.upper().startswith("COPY ")]
    assert not any(re.search(r"\bmodels\b", line) for line in copies), "models are mounted, not baked"
    assert not any(line.upper().startswith(("ENTRYPOINT", "CMD")) and "pip" in line for line in final)


def test_gpu_image_runs_on_cuda_with_the_gpu_extra():
    builder, runtime = stages(Path("docker/Dockerfile.gpu"))[0], stages(Path("docker/Dockerfile.gpu"))[-1]
    assert "cudnn-runtime" in runtime[0] and "nvidia/cuda" in runtime[0]
    assert any('".[gpu,synth]"' in line for line in builder), "DeepSpeed and diffusers are baked in"
    assert any("nltk.downloader" in line for line in builder), "the POS tagger is fetched at build time"
    assert any("NLTK_DATA=" in line for line in runtime)
    assert any("download.pytorch.org/whl/cu" in line for line in builder)
    assert any("HF_HUB_OFFLINE=1" in line for line in runtime), "nothing is downloaded at run time"


def test_cpu_image_is_slim_without_cuda():
    text = Path("docker/Dockerfile.cpu").read_text()
    assert stages(Path("docker/Dockerfile.cpu"))[-1][0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert "whl/cpu" in text and "nvidia/cuda" not in text


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pins_match_pyproject(path):
    pyproject = Path("pyproject.toml").read_text()
    for pin in re.findall(r"(torch(?:vision)?==[\d.]+)", path.read_text()):
        assert f'"{pin}"' in pyproject, pin
