"""Compile a pipeline for a cluster profile and submit it as a run to a KFP endpoint.

Why: a run on the cluster must be the very IR ``bettersynth compile`` writes
(same profile, same placement), with its arguments checked against the
pipeline's inputs *before* anything reaches the cluster, so a typo'd
parameter fails here, naming it, instead of minutes later in a pod.

Example::

    arguments = parse_arguments([Path("run.yaml")], ["seeds=[0,1,2]", "num_shards=16"])
    package = compile_package("production", "k8s/profiles/gke.yaml", Path("production.yaml"))
    result = submit(package, arguments, SubmitSettings(host="https://kfp.example.com", experiment="recap-sweep"))
    result.url   # the run's page in the KFP UI
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

log = logging.getLogger(__name__)

TERMINAL_STATES = ("succeeded", "failed", "skipped", "error", "canceled")
# What KFP's backend launcher can import an artifact from; a path on a volume it cannot.
OBJECT_STORE_SCHEMES = ("s3://", "gs://", "minio://")


@dataclass
class SubmitSettings:
    host: str  # KFP API endpoint, e.g. http://localhost:8888 (port-forwarded ml-pipeline-ui) or the ingress URL
    experiment: str  # KFP experiment the run goes into; created when missing
    run_name: str | None = None  # display name; KFP's default is the package name and a timestamp
    namespace: str | None = None  # profile namespace on multi-user Kubeflow; None for standalone KFP
    service_account: str | None = None  # the runner ServiceAccount (k8s/base: bettersynth-pipeline-runner)
    enable_caching: bool | None = None  # None keeps the compiled per-step caching policy
    ui_host: str | None = None  # where run links point when the UI is not at `host`
    token_env: str | None = None  # name of an environment variable holding a bearer token, if the endpoint needs one


@dataclass
class SubmitResult:
    run_id: str
    url: str  # the run's page in the KFP UI
    state: str | None = None  # final state when waited for


def parse_arguments(files: Sequence[Path] = (), pairs: Sequence[str] = ()) -> dict[str, Any]:
    """Run parameters from YAML files (later files win) and ``key=value`` pairs (win over files).

    Values of pairs are read as YAML, so ``seeds=[0,1]`` is a list and ``num_shards=8`` an int.
    """
    arguments: dict[str, Any] = {}
    for path in files:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read run parameters ({exc})") from None
        if data is None:
            continue
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ValueError(f"{path}: run parameters must be a mapping of parameter names to values")
        arguments.update(data)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {pair!r}: expected key=value")
        try:
            arguments[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--param {pair!r}: value is not valid YAML ({exc})") from None
    return arguments


def parse_build_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` compile-time options (``eval_shards=4``), values parsed as YAML."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--build {pair!r}: expected key=value")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--build {pair!r}: value is not valid YAML ({exc})") from None
    return options


def compile_package(
    pipeline: str, profile: str | Path, output: Path, soup_methods: Sequence[str] = ("uniform", "greedy"),
    options: dict[str, Any] | None = None,
) -> Path:
    """Compile ``pipelines/<pipeline>/pipeline.py`` for ``profile`` to ``output`` (KFP IR YAML).

    ``options`` are the pipeline's compile-time knobs (``build_pipeline`` keyword
    arguments such as ``parallelism`` or ``eval_shards``): they shape the graph
    itself, so they cannot be run parameters. Unknown names are refused.
    """
    import inspect

    from kfp import compiler

    from bettersynth.platform.pipeline_loader import load_pipeline_module
    from bettersynth.platform.placement import load_profile

    module = load_pipeline_module(pipeline)
    options = dict(options or {})
    takes = set(inspect.signature(module.build_pipeline).parameters)
    accepted = takes - {"profile", "soup_methods"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"pipeline {pipeline!r}: unknown build options {unknown} (it takes {sorted(accepted)})")
    if "soup_methods" in takes:  # the sharded-eval pipeline has no soups
        options["soup_methods"] = tuple(soup_methods)
    compiler.Compiler().compile(module.build_pipeline(load_profile(profile), **options), str(output))
    check_importer_uris(Path(output), {})  # defaults only: the run's values are checked at submit
    return Path(output)


def pipeline_inputs(package: Path) -> dict[str, dict[str, Any]]:
    """The root parameters a compiled package declares: name -> its IR definition."""
    documents = list(yaml.safe_load_all(Path(package).read_text(encoding="utf-8")))
    return documents[0].get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def imported_parameters(package: Path) -> list[str]:
    """The root parameters that feed a ``dsl.importer`` (their value becomes an artifact's URI)."""
    spec = next(yaml.safe_load_all(Path(package).read_text(encoding="utf-8")))
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    importers = {name: executor["importer"]["artifactUri"].get("runtimeParameter")
                 for name, executor in executors.items() if "importer" in executor}
    found = []
    for task in spec.get("root", {}).get("dag", {}).get("tasks", {}).values():
        component = spec.get("components", {}).get(task.get("componentRef", {}).get("name"), {})
        uri_input = importers.get(component.get("executorLabel"))
        source = task.get("inputs", {}).get("parameters", {}).get(uri_input or "", {}).get("componentInputParameter")
        if source:
            found.append(source)
    return sorted(set(found))


def check_importer_uris(package: Path, arguments: dict[str, Any]) -> None:
    """Raise ValueError naming each imported parameter whose value (or default) is not an object-store URI.

    Why: the backend downloads an imported artifact from its URI; a PVC path
    fails only in the pod, minutes later. Locally (``kfp.local``) a path is fine.
    """
    declared = pipeline_inputs(package)
    problems = []
    for name in imported_parameters(package):
        value = arguments.get(name, declared.get(name, {}).get("defaultValue"))
        if value is not None and not str(value).startswith(OBJECT_STORE_SCHEMES):
            problems.append(f"parameter {name!r} is imported as an artifact, and KFP's backend imports only "
                            f"object-store URIs ({', '.join(OBJECT_STORE_SCHEMES)}); got {value!r}. Upload it and "
                            "pass its URI, or use the production pipeline, which reads PVC paths as plain parameters")
    if problems:
        raise ValueError(f"{package}: " + "; ".join(problems))


def check_arguments(package: Path, arguments: dict[str, Any]) -> None:
    """Raise ValueError naming unknown parameters and required ones left out."""
    declared = pipeline_inputs(package)
    unknown = sorted(set(arguments) - set(declared))
    missing = sorted(
        name for name, spec in declared.items()
        if name not in arguments and "defaultValue" not in spec and not spec.get("isOptional", False)
    )
    problems = []
    if unknown:
        problems.append(f"unknown parameters {unknown} (the pipeline takes {sorted(declared)})")
    if missing:
        problems.append(f"missing required parameters {missing}")
    if problems:
        raise ValueError(f"{package}: " + "; ".join(problems))


def make_client(settings: SubmitSettings):
    """A ``kfp.Client`` for the endpoint; the token, if any, comes from the named environment variable."""
    import kfp

    token = None
    if settings.token_env:
        token = os.environ.get(settings.token_env)
        if not token:
            raise ValueError(f"token_env: environment variable {settings.token_env!r} is not set")
    return kfp.Client(host=settings.host, existing_token=token, ui_host=settings.ui_host)


def submit(package: Path, arguments: dict[str, Any], settings: SubmitSettings, wait_timeout: float | None = None,
           client=None) -> SubmitResult:
    """Submit the compiled ``package`` with ``arguments``; wait for a final state when ``wait_timeout`` is set."""
    check_arguments(package, arguments)
    check_importer_uris(package, arguments)
    client = client or make_client(settings)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=settings.run_name, experiment_name=settings.experiment,
        namespace=settings.namespace, enable_caching=settings.enable_caching, service_account=settings.service_account,
    )
    url = f"{client._get_url_prefix()}/#/runs/details/{result.run_id}"  # the link KFP's own client prints
    log.info("submitted run %s to %s: %s", result.run_id, settings.host, url)
    state = None
    if wait_timeout is not None:
        run = client.wait_for_run_completion(result.run_id, timeout=wait_timeout)
        state = str(run.state)
        log.info("run %s finished: %s", result.run_id, state)
    return SubmitResult(run_id=result.run_id, url=url, state=state)
