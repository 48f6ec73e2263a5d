"""Two readings of Kubernetes objects that tests share: a CRD's structural schema, and Pod Security ``restricted``.

Why here and small: the API server prunes a field its CRD schema does not
declare (silently) and refuses a pod that breaks the namespace's Pod Security
level; a test must see both the way the cluster would, without a cluster.
"""

from __future__ import annotations

from typing import Any

PSS_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                          "projected", "secret"}  # the volume types Pod Security `restricted` allows


def schema_errors(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Where ``obj`` leaves an OpenAPI v3 structural schema: unknown (pruned) fields, wrong types, missing required."""
    where = path or "<root>"
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(obj, (int, str)) and not isinstance(obj, bool) else [f"{where}: not int-or-string"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if not isinstance(obj, dict):
            return [f"{where}: expected an object"]
        errors = [f"{where}.{key}: required" for key in schema.get("required", []) if key not in obj]
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, value in obj.items():
            if not path and key == "metadata":
                continue  # ObjectMeta: the API server checks it with its own schema, not the CRD's
            if properties and key in properties:
                errors += schema_errors(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(value, extra, f"{path}.{key}")
            elif not (extra is True or schema.get("x-kubernetes-preserve-unknown-fields")):
                errors.append(f"{path}.{key}: unknown field (the API server would prune it)")
        return errors
    if kind == "array":
        if not isinstance(obj, list):
            return [f"{where}: expected an array"]
        errors = [f"{where}: more than {schema['maxItems']} items"] if len(obj) > schema.get("maxItems", len(obj)) else []
        for i, item in enumerate(obj):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{i}]")
        return errors
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
    if kind in checks and not checks[kind](obj):
        return [f"{where}: expected {kind}, got {type(obj).__name__}"]
    if "enum" in schema and obj not in schema["enum"]:
        return [f"{where}: {obj!r} not one of {schema['enum']}"]
    if "minimum" in schema and obj < schema["minimum"]:
        return [f"{where}: below the minimum {schema['minimum']}"]
    return []


def restricted_violations(pod: dict[str, Any], where: str = "pod") -> list[str]:
    """What Pod Security Standards ``restricted`` (v1.30 rules) refuses in a pod spec."""
    problems = [f"{where}: {field}" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= PSS_RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} of type {sorted(kinds)}")
    context = pod.get("securityContext", {})
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        name, own = f"{where}/{container['name']}", container.get("securityContext", {})
        if own.get("privileged"):
            problems.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        capabilities = own.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities must drop ALL (and add at most NET_BIND_SERVICE)")
        seccomp = own.get("seccompProfile", context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems
