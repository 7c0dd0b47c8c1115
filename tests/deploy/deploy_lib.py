"""Helpers of the deployment tests: render and lint the chart with real Helm (3 and 4), render
the helmfile, validate rendered objects against Kubernetes schemas, compute a pod's QoS class,
read what the manifests ask of the server. Also a command line for the C++ e2e tests:

    python3 deploy_lib.py container [-f values.yaml]... [--json '{"server": {...}}']...

prints the qwen-serve container of the rendered Deployment as the e2e tests need it (JSON).

The tools come from scripts/deploy-tools (npm packages in the build tree, $QWEN_DEPLOY_TOOLS):
bin/helm3 (Helm 3.17), bin/helm4 (Helm 4.1), and the schema packages for
validate_manifests.mjs. The helmfile is rendered by tests/deploy/helmrender (Go text/template
with Sprig, as helmfile does), since no helmfile binary comes from a registry reachable here.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from fractions import Fraction

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
CHART = os.path.join(DEPLOY, "helm", "qwen-serve")
HELMFILE = os.path.join(DEPLOY, "helmfile.yaml.gotmpl")
MODEL_VALUES_DIR = os.path.join(DEPLOY, "values")
DOCKERFILE = os.path.join(DEPLOY, "docker", "Dockerfile")
BIN_DIR = os.environ.get("QWEN_BIN_DIR", os.path.join(ROOT, "build", "bin"))
QWEN = os.path.join(BIN_DIR, "qwen")
HELMRENDER = os.environ.get("QWEN_HELMRENDER", os.path.join(BIN_DIR, "tests", "helmrender"))
TOOLS = os.environ.get("QWEN_DEPLOY_TOOLS", os.path.join(ROOT, "build", "deploy-tools"))
HELMS = {"3": os.path.join(TOOLS, "bin", "helm3"), "4": os.path.join(TOOLS, "bin", "helm4")}
NODE = os.environ.get("QWEN_NODE", "node")
VALIDATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validate_manifests.mjs")
TINY_MODEL = os.path.join(ROOT, "tests", "data", "models", "tiny-qwen35-q3_k_m.gguf")


class RenderError(Exception):
    pass


def model_values_files():
    """Every per-model state values file under deploy/values/."""
    out = []
    for dirpath, _, files in os.walk(MODEL_VALUES_DIR):
        for f in files:
            if f.endswith((".yaml", ".yml")):
                out.append(os.path.join(dirpath, f))
    return sorted(out)


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def chart_defaults():
    return load_yaml(os.path.join(CHART, "values.yaml"))


def merge(dst, src):
    """Helm's coalescing of user values over defaults (maps merge, null deletes)."""
    out = dict(dst)
    for k, v in src.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _need_renderer():
    if not os.access(HELMRENDER, os.X_OK):
        raise RenderError(
            f"{HELMRENDER} is missing: it is built from tests/deploy/helmrender with Go and "
            "Debian's Sprig (scripts/setup.sh installs golang-go and "
            "golang-github-masterminds-sprig-dev)")


def helm_binary(version):
    path = HELMS[version]
    if not os.access(path, os.X_OK):
        raise RenderError(f"{path} is missing: scripts/deploy-tools fetches Helm into "
                          f"{TOOLS} (ctest runs it as deploy_tools_fetch)")
    return path


_HELM_HOME = tempfile.mkdtemp(prefix="qwen-helm-home-")


def _helm(version, args):
    """Runs Helm with a private home and no cluster (nothing of the user's is read or written)."""
    env = dict(os.environ, HOME=_HELM_HOME, KUBECONFIG=os.devnull,
               HELM_CACHE_HOME=os.path.join(_HELM_HOME, "cache"),
               HELM_CONFIG_HOME=os.path.join(_HELM_HOME, "config"),
               HELM_DATA_HOME=os.path.join(_HELM_HOME, "data"))
    return subprocess.run([helm_binary(version)] + args, capture_output=True, text=True,
                          env=env, timeout=120)


def _values_args(tmp, value_files, values):
    args = []
    for f in value_files:
        args += ["-f", f]
    for i, v in enumerate(values):
        p = os.path.join(tmp, f"values-{i}.yaml")
        with open(p, "w") as f:
            yaml.safe_dump(v, f)
        args += ["-f", p]
    return args


def split_manifests(text):
    """`helm template` output as [(source, manifest)]: each YAML document with the template it
    came from (Helm's "# Source:" line)."""
    out = []
    for doc in re.split(r"(?m)^---\s*$", text):
        m = re.search(r"^# Source: (\S+)", doc, re.M)
        obj = yaml.safe_load(doc)
        if obj is None:
            continue
        out.append((m.group(1) if m else "?", obj))
    return out


def render_chart(value_files=(), values=(), release="qwen", namespace="qwen", helm="3"):
    """Renders the chart with `helm template` of Helm `helm` ("3" or "4") and the files and
    dicts given (later wins); returns [(source, manifest)]. Raises RenderError with Helm's
    message when a template fails or the values break the schema."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["template", release, CHART, "--namespace", namespace]
        args += _values_args(tmp, value_files, values)
        r = _helm(helm, args)
    if r.returncode != 0:
        raise RenderError(r.stderr.strip())
    return split_manifests(r.stdout)


def lint_chart(value_files=(), values=(), helm="3"):
    """`helm lint --strict` with the values; returns (exit code, output)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = _helm(helm, ["lint", "--strict", CHART] + _values_args(tmp, value_files, values))
    return r.returncode, r.stdout + r.stderr


def render_notes(values=(), release="qwen", namespace="qwen"):
    """NOTES.txt as `helm install` prints it, from Helm 4's client-side dry run (Helm 3's dry
    run needs a cluster)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["install", release, CHART, "--namespace", namespace, "--dry-run=client",
                "-o", "json"] + _values_args(tmp, (), values)
        r = _helm("4", args)
    if r.returncode != 0:
        raise RenderError(r.stderr.strip())
    return json.loads(r.stdout)["info"]["notes"]


def validate_objects(named_objects):
    """Schema and strict field check of [(name, object)] with validate_manifests.mjs; returns
    the list of errors (empty: all valid)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([{"name": n, "object": o} for n, o in named_objects], f)
        path = f.name
    try:
        r = subprocess.run([NODE, VALIDATOR, TOOLS, path], capture_output=True, text=True,
                           timeout=300)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        raise AssertionError(f"validate_manifests.mjs failed: {r.stderr}")
    out = json.loads(r.stdout)
    assert out["checked"] == len(named_objects), out
    return out["errors"]


def render_helmfile(state_values_file, sets=(("chartValues.image.repository",
                                             "registry.example.com/qwen-serve"),)):
    """Renders deploy/helmfile.yaml.gotmpl as helmfile would with --state-values-file and
    --state-values-set KEY=VALUE (by default the image repository, which the helmfile
    requires); returns the parsed documents. Raises RenderError when it fails."""
    _need_renderer()
    args = [HELMRENDER, "helmfile", HELMFILE]
    if state_values_file is not None:
        args += ["--state-values-file", state_values_file]
    for k, v in sets:
        args += ["--state-values-set", f"{k}={v}"]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RenderError(r.stderr.strip())
    return [d for d in yaml.safe_load_all(r.stdout) if d is not None]


def helmfile_release(state_values_file, **kwargs):
    """The qwen-serve release of the helmfile and the chart values it passes."""
    docs = render_helmfile(state_values_file, **kwargs)
    releases = [r for d in docs for r in d.get("releases", [])
                if r.get("chart") == "./helm/qwen-serve"]
    if len(releases) != 1:
        raise AssertionError(f"expected one qwen-serve release, got {len(releases)}")
    rel = releases[0]
    values = {}
    for v in rel.get("values", []):
        if not isinstance(v, dict):
            raise AssertionError(f"release values must be inline maps here, got {v!r}")
        values = merge(values, v)
    return rel, values


def manifests_of(rendered, kind):
    return [m for src, m in rendered if isinstance(m, dict) and m.get("kind") == kind]


def one(rendered, kind, name_suffix=None):
    found = [m for m in manifests_of(rendered, kind)
             if name_suffix is None or m["metadata"]["name"].endswith(name_suffix)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} (suffix {name_suffix}), got {len(found)}")
    return found[0]


def server_container(deployment):
    pod = deployment["spec"]["template"]["spec"]
    [c] = [c for c in pod["containers"] if c["name"] == "qwen-serve"]
    return c


def parse_args(args):
    """The container's args as (subcommand, {flag: value}) with names in underscore form."""
    sub, rest = args[0], args[1:]
    flags = {}
    for a in rest:
        m = re.fullmatch(r"--([A-Za-z0-9_-]+)(?:=(.*))?", a)
        if not m:
            raise AssertionError(f"argument {a!r} is not --name=value")
        flags[m.group(1).replace("-", "_")] = m.group(2) if m.group(2) is not None else "true"
    return sub, flags


def serve_help_flags():
    """The flags `qwen serve --help` lists."""
    r = subprocess.run([QWEN, "serve", "--help"], capture_output=True, text=True)
    text = r.stdout + r.stderr
    return set(re.findall(r"^\s+--([a-z0-9_]+) \(", text, re.M))


def unknown_flags(flags, known):
    """The flags the chart passes that this `qwen serve` does not list in --help."""
    return sorted(k for k in flags if k not in known)


def check_config(flags, extra=(), env=None):
    """Runs `qwen serve --check_config --json` with the flags; returns (exit code, JSON or None,
    stderr)."""
    args = [QWEN, "serve", "--check_config", "--json"]
    args += [f"--{k}={v}" for k, v in flags.items()] + list(extra)
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    try:
        out = json.loads(r.stdout)
    except json.JSONDecodeError:
        out = None
    return r.returncode, out, r.stderr


def volume_of(pod_spec, name):
    [v] = [v for v in pod_spec.get("volumes", []) if v["name"] == name]
    return v


def mount_for(container, pod_spec, path):
    """The volume mount that holds `path` (the longest mountPath that is a prefix), with its
    volume; None when the path is on the image's root filesystem."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    if best is None:
        return None
    return best, volume_of(pod_spec, best["name"])


def probe_service(probe):
    """The grpc.health.v1 service a probe asks about (native gRPC or `qwen health`)."""
    if "grpc" in probe:
        return probe["grpc"].get("service", "")
    for a in probe.get("exec", {}).get("command", []):
        if a.startswith("--service="):
            return a.split("=", 1)[1]
    return ""


QUANTITY_SUFFIXES = {"": 1, "m": Fraction(1, 1000), "k": 1000, "M": 10**6, "G": 10**9,
                     "T": 10**12, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def quantity(q):
    """A Kubernetes resource quantity ("500m", "4", "11689Mi") as an exact Fraction."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(q))
    if not m:
        raise AssertionError(f"not a quantity: {q!r}")
    return Fraction(m.group(1)) * QUANTITY_SUFFIXES[m.group(2) or ""]


def qos_class(pod_spec):
    """The pod's QoS class by Kubernetes' rule (pkg/apis/core/helper/qos, GetPodQOS), applied
    to the pod as the API server stores it (a container's missing request defaults to its
    limit): for every container, init containers included, requests and limits of cpu and
    memory are summed; no request or limit anywhere: BestEffort; every container limiting both
    cpu and memory and the sums of requests equal to those of limits: Guaranteed; else
    Burstable."""
    requests, limits = {}, {}
    guaranteed = True
    for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        res = c.get("resources", {}) or {}
        lim = {k: quantity(v) for k, v in (res.get("limits") or {}).items()
               if k in ("cpu", "memory")}
        req = {k: quantity(v) for k, v in (res.get("requests") or {}).items()
               if k in ("cpu", "memory")}
        for k, v in lim.items():
            req.setdefault(k, v)  # the API server's defaulting
        for k, v in req.items():
            if v > 0:
                requests[k] = requests.get(k, 0) + v
        found = set()
        for k, v in lim.items():
            if v > 0:
                found.add(k)
                limits[k] = limits.get(k, 0) + v
        if found != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(k) == v for k, v in requests.items()) \
            and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def container_summary(rendered):
    """What the e2e tests need of the server container (see the module docstring)."""
    dep = one(rendered, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = server_container(dep)
    sub, flags = parse_args(c["args"])
    mounts = []
    for m in c.get("volumeMounts", []):
        v = volume_of(pod, m["name"])
        kind = next(k for k in v if k != "name")
        mounts.append({"path": m["mountPath"], "read_only": bool(m.get("readOnly", False)),
                       "volume": kind})
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    known = serve_help_flags()
    unknown = unknown_flags(flags, known)
    if unknown:
        raise AssertionError(f"the chart passes flags qwen serve does not know: {unknown}")
    sec = dict(pod.get("securityContext", {}))
    sec.update(c.get("securityContext", {}))
    return {
        "args": c["args"],
        "flags": flags,
        "binary_knows": sorted(known),
        "env": {e["name"]: e["value"] for e in c.get("env", [])},
        "run_as_user": sec["runAsUser"],
        "run_as_group": sec["runAsGroup"],
        "read_only_root": sec.get("readOnlyRootFilesystem", False),
        "mounts": mounts,
        "termination_grace_period_seconds": pod["terminationGracePeriodSeconds"],
        "pre_stop_sleep_seconds": int(pre_stop[-1]) if pre_stop[0].endswith("sleep") else 0,
        "grpc_port": next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc"),
        "probe_service": probe_service(c["readinessProbe"]),
        # The probes' check: {"grpc": {...}} (the kubelet's own) or {"exec": {"command": [...]}}.
        "readiness_probe": {k: v for k, v in c["readinessProbe"].items()
                            if k in ("grpc", "exec", "tcpSocket")},
        "liveness_window_seconds": c["livenessProbe"]["periodSeconds"]
        * c["livenessProbe"]["failureThreshold"],
    }


def main(argv):
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["container"])
    p.add_argument("-f", dest="files", action="append", default=[])
    p.add_argument("--json", dest="values", action="append", default=[], type=json.loads)
    a = p.parse_args(argv)
    try:
        rendered = render_chart(a.files, a.values)
    except RenderError as e:
        print(f"deploy_lib: {e}", file=sys.stderr)
        return 1
    print(json.dumps(container_summary(rendered), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
