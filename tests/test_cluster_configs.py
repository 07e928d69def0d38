"""cluster/: every config is valid for what reads it, and names only things that exist in this repo.

Fast and offline: no Kubernetes, no Docker, no cloud. KubeRay manifests are validated against the
CRD schemas in ../shared/kuberay/crds (skipped, with a message, where that folder is absent);
core Kubernetes objects against kubernetes-validate's bundled schemas; the cluster-launcher YAML
with the checks `ray up` runs before it calls AWS. Entrypoints are parsed with the `matting` CLI's
own parser, and the Dockerfile's COPY sources and the Serve import paths are looked up in the tree.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from crd_schema import CRDSchemas

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
CRD_DIR = ROOT.parent / "shared" / "kuberay" / "crds"
LAUNCHER = CLUSTER / "aws" / "cluster-launcher.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
SERVE_CONFIG = ROOT / "serve" / "config.gpu.yaml"  # the RayService runs on GPU workers

# `matting run` options that the configs use and that issue 6 is adding to pipelines/cli/ now
# (name: number of values). Until the parser has one, entrypoints are parsed without it and
# test_pending_run_options_exist skips with its name. Delete entries once they are merged.
def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_manifests() -> list[tuple[str, dict]]:
    """(label, object) for every object in cluster/kuberay, plus the RayJob inside the ConfigMap."""
    out = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in load_docs(path):
            out.append((f"{path.name}:{doc['kind']}", doc))
            if doc["kind"] == "ConfigMap":
                for key, text in doc.get("data", {}).items():
                    if key.endswith((".yaml", ".yml")):
                        for inner in yaml.safe_load_all(text):
                            out.append((f"{path.name}:ConfigMap[{key}]:{inner['kind']}", inner))
    return out


MANIFESTS = all_manifests()
RAY_MANIFESTS = [(label, m) for label, m in MANIFESTS if m["apiVersion"].startswith("ray.io/")]
CORE_MANIFESTS = [(label, m) for label, m in MANIFESTS if not m["apiVersion"].startswith("ray.io/")]


def one(kind: str, file: str | None = None) -> dict:
    found = [m for label, m in MANIFESTS if m["kind"] == kind and (file is None or label.startswith(file + ":"))]
    assert len(found) == 1, f"expected one {kind}{' in ' + file if file else ''}, found {len(found)}"
    return found[0]


def rayjob_specs() -> list[tuple[str, dict]]:
    """Every RayJob spec the configs would run: the RayJob, the RayCronJob template, the ConfigMap's."""
    specs = [(label, m["spec"]) for label, m in RAY_MANIFESTS if m["kind"] == "RayJob"]
    specs += [(label, m["spec"]["jobTemplate"]) for label, m in RAY_MANIFESTS if m["kind"] == "RayCronJob"]
    return specs


def cluster_specs() -> list[tuple[str, dict]]:
    """Every RayCluster spec: the RayCluster's own, and the ones inside RayJobs and the RayService."""
    specs = [(label, m["spec"]) for label, m in RAY_MANIFESTS if m["kind"] == "RayCluster"]
    specs += [(label, s["rayClusterSpec"]) for label, s in rayjob_specs()]
    specs += [(label, m["spec"]["rayClusterConfig"]) for label, m in RAY_MANIFESTS if m["kind"] == "RayService"]
    return specs


def containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def pinned(requirement_prefix: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.replace(" ", "").startswith(requirement_prefix))
    return pin.split("==", 1)[1].strip()


@pytest.fixture(scope="module")
def crds() -> CRDSchemas:
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {CRD_DIR} (../shared/kuberay/crds beside the repository); "
                    f"the manifests in cluster/kuberay are not schema-checked here")
    return CRDSchemas(CRD_DIR)


# --- KubeRay manifests against the CRDs -----------------------------------------------------------

def test_every_kuberay_kind_is_here():
    kinds = {m["kind"] for _, m in RAY_MANIFESTS}
    assert {"RayCluster", "RayJob", "RayService", "RayCronJob"} <= kinds, kinds


@pytest.mark.parametrize("label,manifest", RAY_MANIFESTS, ids=[label for label, _ in RAY_MANIFESTS])
def test_kuberay_manifest_matches_crd(crds, label, manifest):
    errors = crds.errors(manifest)
    assert not errors, f"{label} breaks its CRD schema:\n" + "\n".join(errors)


@pytest.mark.parametrize("broken,expected", [
    (lambda m: m["spec"].__setitem__("enableInTreeAutoScaling", True), "enableInTreeAutoScaling"),  # typo
    (lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("replicas", "1"), "is not of type 'integer'"),
    (lambda m: m["spec"]["workerGroupSpecs"][0].pop("groupName"), "'groupName' is a required property"),
    (lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", 2**31), "is not a 'int32'"),
    (lambda m: m["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
     .__setitem__("cpu", 7.5), "is not valid under any of the given schemas"),  # int-or-string
    (lambda m: m["spec"].__setitem__("managedBy", "someone"), "CEL rules"),
])
def test_crd_validation_rejects_broken_manifests(crds, broken, expected):
    """The schema check can fail: each of these edits of the RayCluster must be caught."""
    manifest = yaml.safe_load(yaml.safe_dump(one("RayCluster")))
    broken(manifest)
    errors = crds.errors(manifest)
    assert any(expected in e for e in errors), errors


def test_int_or_string_quantities_accept_both_forms(crds):
    manifest = yaml.safe_load(yaml.safe_dump(one("RayCluster")))
    limits = manifest["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits.update(cpu=7, memory="26Gi")
    assert crds.errors(manifest) == []


# --- Core Kubernetes objects (the portable nightly CronJob and its RBAC) ----------------------------

@pytest.mark.parametrize("label,manifest", CORE_MANIFESTS, ids=[label for label, _ in CORE_MANIFESTS])
def test_core_manifest_matches_kubernetes_schema(label, manifest):
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions

    version = all_versions()[0]  # the oldest Kubernetes the library knows: the widest compatibility
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{label} is not a valid {manifest['kind']} for Kubernetes {version}: {e.message} "
                    f"at {'.'.join(map(str, e.absolute_path))}")


@pytest.mark.parametrize("label,manifest", MANIFESTS, ids=[label for label, _ in MANIFESTS])
def test_metadata_names_are_valid(label, manifest):
    meta = manifest["metadata"]
    name = meta.get("name") or meta.get("generateName", "").rstrip("-")
    # KubeRay derives Pod, Service and cluster names from it (-<random>, -head-svc, -serve-svc), and
    # those must stay DNS-1123 labels of at most 63 characters.
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40, \
        f"{label}: {name!r} is not a DNS-1123 label of at most 40 characters"
    for key, value in meta.get("labels", {}).items():
        assert isinstance(value, str) and len(value) <= 63 \
            and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value), \
            f"{label}: label {key}={value!r} is not a valid label value"


def test_nightly_cronjob_creates_the_rayjob_and_never_overlaps():
    cron = one("CronJob", "nightly-cronjob.yaml")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5, spec["schedule"]
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert job["backoffLimit"] == 0, "a retried Pod would create a second RayJob; retries belong to the RayJob"
    assert pod["restartPolicy"] == "Never"
    # The Job must outlive the RayJob it waits for, or Forbid would not cover the whole run.
    rayjob = one("RayJob", "nightly-cronjob.yaml")
    assert job["activeDeadlineSeconds"] > rayjob["spec"]["activeDeadlineSeconds"]

    sa = one("ServiceAccount", "nightly-cronjob.yaml")["metadata"]["name"]
    assert pod["serviceAccountName"] == sa
    role = one("Role", "nightly-cronjob.yaml")
    binding = one("RoleBinding", "nightly-cronjob.yaml")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": sa} in binding["subjects"]
    granted = {v for rule in role["rules"] if "ray.io" in rule["apiGroups"] and "rayjobs" in rule["resources"]
               for v in rule["verbs"]}
    assert {"create", "get", "list", "delete"} <= granted, granted

    # The script reads the RayJob where the ConfigMap is mounted.
    configmap = one("ConfigMap", "nightly-cronjob.yaml")
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (key,) = configmap["data"]
    assert f"{mount['mountPath']}/{key}" in container["args"][0]
    assert rayjob["metadata"].get("generateName"), "a fixed name would collide with the previous night's RayJob"


FAKE_KUBECTL = r"""#!/bin/sh
# A stand-in for kubectl that records its calls and answers from files in $FAKE.
echo "$*" >> "$FAKE/calls"
case "$1 $2" in
  "get rayjobs") cat "$FAKE/old_runs" ;;
  "delete "*) ;;
  "create -f") echo "rayjob.ray.io/matting-nightly-x7k2p" ;;
  "get rayjob.ray.io/"*)
    state=$(head -n 1 "$FAKE/states"); sed -i 1d "$FAKE/states"
    [ "$state" = ERR ] && { echo "connection refused" >&2; exit 1; }
    printf '%s' "$state" ;;
esac
"""


@pytest.mark.parametrize("states,code", [
    (["Initializing/", "Running/RUNNING", "ERR", "Retrying/FAILED", "Running/RUNNING", "Complete/SUCCEEDED"], 0),
    (["Running/RUNNING", "Failed/FAILED"], 1),
    (["Running/RUNNING", "Complete/STOPPED"], 1),
])
def test_nightly_trigger_script_waits_for_the_rayjob(tmp_path, states, code):
    """The CronJob's shell script, run with /bin/sh against a stand-in kubectl (no API server here)."""
    container = one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    fake, bin_dir = tmp_path / "fake", tmp_path / "bin"
    fake.mkdir()
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(stat.S_IRWXU)
    old = [f"rayjob.ray.io/matting-nightly-old{i}" for i in range(5)]  # oldest first, as --sort-by gives
    (fake / "old_runs").write_text("\n".join(old) + "\n")
    (fake / "states").write_text("\n".join(states) + "\n")
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]},
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE": str(fake), "POLL_SECONDS": "0", "KEEP_RUNS": "3"}
    proc = subprocess.run([*container["command"], container["args"][0]], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == code, proc.stdout + proc.stderr
    calls = (fake / "calls").read_text().splitlines()
    # KEEP_RUNS=3: the two newest old runs stay, and tonight's makes three.
    assert [c for c in calls if c.startswith("delete")] == [f"delete {' '.join(old[:3])}"]
    assert sum(c.startswith("create") for c in calls) == 1
    assert (fake / "states").read_text().strip() == "", "the script stopped before the run ended"


# --- One spec, one image, one Ray version -------------------------------------------------------

def test_nightly_rayjobs_run_the_rayjob_spec():
    reference = one("RayJob", "rayjob.yaml")["spec"]
    for label, spec in rayjob_specs():
        assert spec == reference, f"{label} differs from rayjob.yaml's spec: change both together"


def test_one_image_and_the_pinned_ray_version_everywhere():
    ray_version = pinned("ray[")
    images = {c["image"] for _, spec in cluster_specs() for c in containers(spec)}
    launcher = yaml.safe_load(LAUNCHER.read_text())
    images.add(launcher["docker"]["image"])
    assert len(images) == 1, f"head and workers everywhere must run one image, found {images}"
    for label, spec in cluster_specs():
        assert spec["rayVersion"] == ray_version, f"{label}: rayVersion is not pyproject's {ray_version}"


def test_cluster_specs_have_a_cpu_head_and_gpu_workers():
    for label, spec in cluster_specs():
        head = spec["headGroupSpec"]
        assert head["rayStartParams"].get("num-cpus") == "0", f"{label}: the head should take no tasks"
        for c in head["template"]["spec"]["containers"]:
            assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), f"{label}: GPU head"
        gpu_groups = [g for g in spec["workerGroupSpecs"]
                      if any("nvidia.com/gpu" in c["resources"].get("limits", {})
                             for c in g["template"]["spec"]["containers"])]
        assert gpu_groups, f"{label} has no GPU worker group"
        for g in spec["workerGroupSpecs"]:
            replicas = g.get("replicas", g["minReplicas"])
            assert g["minReplicas"] <= replicas <= g["maxReplicas"], f"{label}: {g['groupName']} replicas"
            for c in g["template"]["spec"]["containers"]:
                res = c["resources"]
                assert res.get("requests", {}).get("cpu") and res.get("limits", {}).get("memory"), \
                    f"{label}: {g['groupName']} needs CPU and memory set, or KubeRay guesses Ray's resources"
        for g in gpu_groups:
            tolerations = g["template"]["spec"].get("tolerations", [])
            assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations), \
                f"{label}: {g['groupName']} cannot land on tainted GPU nodes"
            for c in g["template"]["spec"]["containers"]:
                assert c["resources"]["limits"]["nvidia.com/gpu"] == 1, "one GPU per Pod: one actor per GPU"
    raycluster = one("RayCluster")["spec"]
    assert raycluster["enableInTreeAutoscaling"] is True
    assert any(g["maxReplicas"] > g["minReplicas"] for g in raycluster["workerGroupSpecs"])


def test_rayjob_cleans_up_and_is_bounded():
    spec = one("RayJob", "rayjob.yaml")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] < 24 * 3600, \
        "a nightly run must end before the next night's starts"
    for c in containers(spec["rayClusterSpec"]):
        refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"]}
        assert refs["AWS_ACCESS_KEY_ID"] and refs["AWS_SECRET_ACCESS_KEY"], "S3 credentials come from a Secret"


# --- Entrypoints against the `matting` CLI ----------------------------------------------------------

def run_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    from pipelines.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices["run"]


ENTRYPOINTS = [(label, spec["entrypoint"]) for label, spec in rayjob_specs()]


@pytest.mark.parametrize("label,entrypoint", ENTRYPOINTS, ids=[label for label, _ in ENTRYPOINTS])
def test_entrypoint_parses_with_the_matting_cli(label, entrypoint, capsys):
    parser, run = run_parser()
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["matting", "run"], f"{label}: expected `matting run ...`, got {entrypoint!r}"
    argv = argv[1:]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{label}: `matting {' '.join(argv)}` is rejected by pipelines/cli/:\n{capsys.readouterr().err}")
    assert args.source.startswith("s3://") and args.dest.startswith("s3://")
    assert args.device == "cuda", "on a GPU cluster, fail at start rather than fall back to CPU unnoticed"


# --- The Dockerfile -----------------------------------------------------------------------------

def dockerfile(**build_args):
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(path=str(DOCKERFILE), build_args=build_args, env_replace=True)


def instructions(kind: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == kind]


def test_dockerfile_starts_from_the_official_ray_image_of_our_pin():
    ray_version = pinned("ray[")
    assert dockerfile().baseimage == f"rayproject/ray:{ray_version}-py311"
    assert dockerfile(RAY_IMAGE_SUFFIX="-gpu").baseimage == f"rayproject/ray:{ray_version}-py311-gpu"
    assert dockerfile(RAY_IMAGE_SUFFIX="-cu128").baseimage == f"rayproject/ray:{ray_version}-py311-cu128"


def test_dockerfile_copies_existing_paths_and_every_package():
    sources = []
    for value in instructions("COPY"):
        parts = [p for p in shlex.split(value) if not p.startswith("--")]
        sources += parts[:-1]
    missing = [s for s in sources if not (ROOT / s).exists()]
    pending = [s for s in missing if s == "serve"]
    assert not set(missing) - set(pending), f"COPY sources missing from the repository: {missing}"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in sources, f"pyproject packages {pattern!r} are not copied into the image"
    ignored = {line.strip() for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & set(sources), f"the dockerignore file hides COPY sources: {ignored & set(sources)}"
    if pending:
        pytest.skip("serve/ (COPY'd by the Dockerfile) is not on this branch yet: the Serve app is being "
                    "written on another branch; every other COPY source exists")


def test_dockerfile_bakes_the_weights_with_commands_the_cli_has():
    from pipelines.cli import build_parser

    envs = dockerfile().envs
    assert envs.get("MATTING_WEIGHTS_DIR", "").startswith("/"), "the weights cache must be a fixed absolute path"
    # `matting` as a command (not inside a path such as /opt/unet-matting), with its words.
    pattern = re.compile(r"(?<![\w/.-])matting((?: [\w.-]+)+)")
    commands = [m.split() for run in instructions("RUN") for m in pattern.findall(run)]
    assert ["weights", "fetch", "u2netp"] in commands, commands
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"the Dockerfile runs `matting {' '.join(argv)}`, which pipelines/cli/ rejects")


# --- Serve --------------------------------------------------------------------------------------

def serve_applications_in_rayservice() -> list[dict]:
    return yaml.safe_load(one("RayService")["spec"]["serveConfigV2"])["applications"]


def test_rayservice_serves_the_same_applications_as_serve_config():
    if not SERVE_CONFIG.is_file():
        pytest.skip(f"{SERVE_CONFIG.relative_to(ROOT)} does not exist yet (the Serve app is being written on "
                    f"another branch): cannot compare it with rayservice.yaml's serveConfigV2")
    local = yaml.safe_load(SERVE_CONFIG.read_text())["applications"]
    assert serve_applications_in_rayservice() == local, \
        "rayservice.yaml's serveConfigV2 and serve/config.gpu.yaml must carry the same applications"


def test_serve_import_paths_resolve():
    paths = [app["import_path"] for app in serve_applications_in_rayservice()]
    if not (ROOT / "serve" / "__init__.py").is_file():
        pytest.skip(f"serve/ is not on this branch yet: cannot import {paths}")
    for path in paths:
        module, _, attr = path.partition(":")
        assert attr, f"import_path {path!r} must be module:attribute"
        assert hasattr(importlib.import_module(module), attr), f"{module} has no {attr}"


# --- The AWS cluster launcher ----------------------------------------------------------------------

def test_cluster_launcher_passes_ray_ups_own_checks():
    """What `ray up` does before it calls AWS: fill in the defaults, then validate against Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(LAUNCHER.read_text()))
    validate_config(config)
    # Missing keys take the launcher's defaults, which install a nightly Ray wheel on every node.
    assert config["setup_commands"] == [] and config["head_setup_commands"] == [] \
        and config["worker_setup_commands"] == [], "the image holds everything: no setup commands"


def test_cluster_launcher_has_a_cpu_head_and_gpu_workers():
    config = yaml.safe_load(LAUNCHER.read_text())
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for name, t in types.items() if name != config["head_node_type"] and t["resources"].get("GPU")]
    assert gpu, "no GPU worker node type"
    for t in gpu:
        assert t["resources"]["GPU"] == 1 and t["node_config"]["InstanceType"]
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
    assert config["docker"]["image"], "every node runs the image built from cluster/Dockerfile"
