"""Validate custom resources against their CustomResourceDefinition, as the API server would.

A CRD's openAPIV3Schema is a *structural* schema: JSON Schema (draft 4 style) plus Kubernetes
extensions that jsonschema does not know. `crd_validator` turns it into something jsonschema
enforces the way `kubectl apply` (strict field validation, the default since Kubernetes 1.27) does:

- unknown fields are errors: every object schema that lists `properties` and neither sets
  `additionalProperties` nor `x-kubernetes-preserve-unknown-fields: true` gets
  `additionalProperties: false` (the API server would reject or prune them; a typo such as
  `enableInTreeAutoScaling` must not pass silently);
- `x-kubernetes-int-or-string: true` accepts an integer or a string (quantities: 7 or "7" or "26Gi");
- `nullable: true` accepts null;
- `format: int32 / int64` are range-checked;
- `x-kubernetes-validations` (CEL rules) cannot be evaluated here: a manifest that sets a field
  guarded by one fails with a message saying so, so that such a field gets reviewed and a check
  added, instead of being waved through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _structural(node: Any) -> Any:
    """A copy of one schema node with the Kubernetes extensions made enforceable."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in node:
        out["properties"] = {name: _structural(s) for name, s in node["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = _structural(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            out[key] = [_structural(s) for s in node[key]]
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _cel_rules(validator, rules, instance, schema) -> Iterator[jsonschema.ValidationError]:
    exprs = "; ".join(r.get("rule", "?") for r in rules)
    yield jsonschema.ValidationError(
        f"this field is guarded by CEL rules that this test cannot evaluate ({exprs}): check the value "
        f"against them by hand and add a test for it, then allow the field in tests/crd_schema.py")


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    for name, (lo, hi) in INT_RANGES.items():
        checker.checks(name)(lambda v, lo=lo, hi=hi: not isinstance(v, int) or lo <= v <= hi)
    return checker


_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"x-kubernetes-validations": _cel_rules})


class CRDSchemas:
    """The CRDs in one folder, looked up by apiVersion and kind."""

    def __init__(self, folder: Path):
        self.crds: dict[tuple[str, str], dict] = {}
        for path in sorted(folder.glob("*.yaml")):
            # libyaml's loader: the four KubeRay CRDs are 4 MB of YAML, a minute for the pure-Python one.
            for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.crds[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = doc

    def kinds(self) -> list[str]:
        return sorted(f"{group}/{kind}" for group, kind in self.crds)

    def schema(self, api_version: str, kind: str) -> dict:
        group, _, version = api_version.partition("/")
        crd = self.crds.get((group, kind))
        if crd is None:
            raise KeyError(f"no CRD for {kind} in group {group}; the folder has {self.kinds()}")
        for v in crd["spec"]["versions"]:
            if v["name"] == version:
                if not v.get("served", False):
                    raise KeyError(f"{api_version} {kind} is not served by its CRD")
                return v["schema"]["openAPIV3Schema"]
        raise KeyError(f"{kind}'s CRD has no version {version}: {[v['name'] for v in crd['spec']['versions']]}")

    def errors(self, manifest: dict) -> list[str]:
        """Every way `manifest` breaks its CRD's schema, one line each (empty when it is valid)."""
        schema = _structural(self.schema(manifest["apiVersion"], manifest["kind"]))
        validator = _Validator(schema, format_checker=_format_checker())
        return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]
