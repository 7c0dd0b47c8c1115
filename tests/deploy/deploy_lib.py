"""Helpers of the deployment tests: render the chart and the helmfile, read what the manifests
ask of the server. Also a command line for the C++ e2e tests:

    python3 deploy_lib.py container [-f values.yaml]... [--json '{"server": {...}}']...

prints the qwen-serve container of the rendered Deployment as the e2e tests need it (JSON).
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

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
TINY_MODEL = os.path.join(ROOT, "tests", "data", "models", "tiny-qwen35-q3_k_m.gguf")

# Flags the chart passes that other branches add to `qwen serve` (ops: metrics and logging;
# reliability: TLS, tokens, limits). Until they are merged, the binary does not know them: the
# tests skip those names (saying so) instead of failing. Once the binary knows a name it is
# checked like every other flag.
PENDING_FLAGS = {
    "metrics_port": "ops", "log_level": "ops", "log_format": "ops",
    "tls_cert": "reliability", "tls_key": "reliability", "tls_client_ca": "reliability",
    "auth_tokens_file": "reliability", "auth_exempt_probes": "reliability",
    "max_message_bytes": "reliability", "max_concurrent_streams": "reliability",
    "max_tools": "reliability", "max_stop_strings": "reliability",
}


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


def render_chart(value_files=(), values=(), release="qwen", namespace="qwen"):
    """Renders the chart with the files and dicts given (later wins); returns a list of
    (source, manifest) for every YAML document. Raises RenderError with the renderer's message
    when a template fails."""
    _need_renderer()
    with tempfile.TemporaryDirectory() as tmp:
        args = [HELMRENDER, "chart", CHART, "--release", release, "--namespace", namespace]
        for f in value_files:
            args += ["-f", f]
        for i, v in enumerate(values):
            p = os.path.join(tmp, f"values-{i}.yaml")
            with open(p, "w") as f:
                yaml.safe_dump(v, f)
            args += ["-f", p]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            raise RenderError(r.stderr.strip())
    out = []
    for item in json.loads(r.stdout):
        if item["source"].endswith("NOTES.txt"):
            out.append((item["source"], item["content"]))
            continue
        for doc in yaml.safe_load_all(item["content"]):
            if doc is not None:
                out.append((item["source"], doc))
    return out


def render_helmfile(state_values_file):
    """Renders deploy/helmfile.yaml.gotmpl as helmfile would with --state-values-file; returns
    the parsed documents. Raises RenderError when it fails."""
    _need_renderer()
    args = [HELMRENDER, "helmfile", HELMFILE]
    if state_values_file is not None:
        args += ["--state-values-file", state_values_file]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RenderError(r.stderr.strip())
    return [d for d in yaml.safe_load_all(r.stdout) if d is not None]


def helmfile_release(state_values_file):
    """The one release of the helmfile and the chart values it passes."""
    docs = render_helmfile(state_values_file)
    releases = [r for d in docs for r in d.get("releases", [])]
    if len(releases) != 1:
        raise AssertionError(f"expected one release, got {len(releases)}")
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


def split_known(flags, known):
    """(flags the binary knows, {pending name: branch}); raises for a flag nobody adds."""
    usable, pending = {}, {}
    for k, v in flags.items():
        if k in known:
            usable[k] = v
        elif k in PENDING_FLAGS:
            pending[k] = PENDING_FLAGS[k]
        else:
            raise AssertionError(f"--{k} is neither a qwen serve flag nor one a branch adds")
    return usable, pending


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
    usable, pending = split_known(flags, known)
    sec = dict(pod.get("securityContext", {}))
    sec.update(c.get("securityContext", {}))
    return {
        "args": c["args"],
        "flags": flags,
        # The flags this build of qwen serve knows, and those other branches add (skipped).
        "known_flags": usable,
        "pending_flags": pending,
        "binary_knows": sorted(known),
        "env": {e["name"]: e["value"] for e in c.get("env", [])},
        "run_as_user": sec["runAsUser"],
        "run_as_group": sec["runAsGroup"],
        "read_only_root": sec.get("readOnlyRootFilesystem", False),
        "mounts": mounts,
        "termination_grace_period_seconds": pod["terminationGracePeriodSeconds"],
        "pre_stop_sleep_seconds": int(pre_stop[-1]) if pre_stop[0].endswith("sleep") else 0,
        "grpc_port": next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc"),
        "probe_service": c["readinessProbe"].get("grpc", {}).get("service", ""),
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
