"""The component images' Dockerfiles, read without Docker: multi-stage, non-root, nothing installed at run time."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

from bettersynth.platform.placement import load_profile

DOCKERFILES = sorted(p for p in Path("docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|cmake|nvcc|cuda-toolkit|-devel)\b")
# The optional extras a step needs beyond the base dependencies, and why (a step not listed needs none).
STEP_EXTRAS = {
    "train": {"gpu"},            # DeepSpeed ZeRO: bettersynth/train/deepspeed.py imports deepspeed
    "filter": {"synth"},         # a recipe may run image_diffusion_mapper: bettersynth/engine/diffusion.py
    "caption": {"synth"},        #   imports diffusers
    "version-dataset": {"s3"},   # `dvc push` to the profiles' S3 remote loads the dvc-s3 plugin
}
# What each extra must carry: the distribution that provides the import.
EXTRA_PROVIDES = {"gpu": "deepspeed", "synth": "diffusers", "s3": "dvc-s3"}


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
    assert {"gpu", "synth"} <= installed_extras(Path("docker/Dockerfile.gpu")), "DeepSpeed and diffusers are baked in"
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


def installed_extras(path: Path) -> set[str]:
    """Extras of bettersynth (`.` or `".[a,b]"`) installed by the builder stage's pip / uv pip lines."""
    extras: set[str] = set()
    found = False
    for line in stages(path)[0]:
        for command in re.split(r"&&", line):
            if not re.search(r"\bpip install\b", command):
                continue
            for match in re.finditer(r"""(?:^|\s)["']?\.(?:\[([\w,-]+)\])?["']?(?=\s|$)""", command):
                found = True
                extras |= set(filter(None, (match.group(1) or "").split(",")))
    assert found, f"{path}: no pip install of the project"
    return extras


def test_install_lines_are_read_as_pip_reads_them(tmp_path):
    dockerfile = tmp_path / "Dockerfile.x"
    dockerfile.write_text('FROM a AS b\nRUN pip install --index-url x torch==1 \\\n && uv pip install --no-deps ".[gpu,s3]" \\\n'
                          ' && pip install . && python -c "import x"\nFROM c\n')
    assert installed_extras(dockerfile) == {"gpu", "s3"}
    dockerfile.write_text("FROM a AS b\nRUN pip install torch\nFROM c\n")
    with pytest.raises(AssertionError, match="no pip install of the project"):
        installed_extras(dockerfile)


@pytest.mark.parametrize("profile_path", sorted(Path("k8s/profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_each_image_installs_what_its_profiles_steps_need(profile_path):
    profile = load_profile(profile_path)
    unknown = set(STEP_EXTRAS) - set(profile.steps)
    assert not unknown, f"{profile_path}: STEP_EXTRAS names steps the profile does not place: {unknown}"
    for step in profile.steps:
        key = profile.pool_for(step).image
        assert key, f"{profile_path}: step {step} keeps the component's image"
        dockerfile = Path(f"docker/Dockerfile.{key}")
        assert dockerfile.is_file(), f"{profile_path}: image {key!r} has no {dockerfile}"
        missing = STEP_EXTRAS.get(step, set()) - installed_extras(dockerfile)
        assert not missing, f"{profile_path}: step {step} runs on {dockerfile}, which lacks the extras {missing}"


def test_the_extras_carry_what_the_steps_import():
    extras = tomllib.loads(Path("pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, distribution in EXTRA_PROVIDES.items():
        assert any(re.match(rf"{distribution}\b", req) for req in extras[extra]), (extra, extras[extra])
    try:
        requires = importlib.metadata.requires("dvc-s3") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("dvc-s3 is not installed here (pip install -e '.[dev]')")
    names = {re.split(r"[\s\[<>=;!~]", req, maxsplit=1)[0].lower() for req in requires if "extra ==" not in req}
    assert {"s3fs", "botocore"} <= names, "an S3 remote needs s3fs and botocore (boto3's core) in the image"


def test_step_sources_named_in_the_table_import_what_they_say():
    assert re.search(r"import_module\(\"deepspeed\"\)|import deepspeed", Path("src/bettersynth/train/deepspeed.py").read_text())
    assert "from diffusers import" in Path("src/bettersynth/engine/diffusion.py").read_text()
    assert "from bettersynth.versioning.dvc import" in Path("src/bettersynth/steps/version.py").read_text()
