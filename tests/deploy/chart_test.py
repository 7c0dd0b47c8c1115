"""The deployment files agree with each other and with the server (label unit).

Real Helm is the test: the chart is linted (`helm lint --strict`) and rendered (`helm template`)
with Helm 3.17 and Helm 4.1 (scripts/deploy-tools) for the defaults, the chart's own values.yaml
passed back with -f, every per-model values file (as the helmfile passes it), every optional
feature on, and a table of bad values that both must refuse. Every rendered object is validated
against its Kubernetes (or CRD) schema with a strict field check (validate_manifests.mjs), the
pod's QoS class is computed by Kubernetes' rule, and the manifests are checked against
`qwen serve --help` / `--check_config` (flag names and values), against each other (ports,
probes, Services, NetworkPolicy, autoscaler, routes) and against what the server writes (socket
directory, TMPDIR on writable volumes; model read-only; non-root user of the Dockerfile). The
helmfile is rendered by tests/deploy/helmrender (no helmfile binary is at hand).
"""

import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import unittest
from fractions import Fraction

import jsonschema
import yaml

sys.path.insert(0, os.path.dirname(__file__))
import deploy_lib as d  # noqa: E402

MiB = 1 << 20


def schema():
    with open(os.path.join(d.CHART, "values.schema.json")) as f:
        return json.load(f)


def duration_seconds(v):
    """Seconds of a duration as Abseil writes and reads them ("90s", "1m30s", "250ms", "0")."""
    if v == "0":
        return 0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", v)
    assert parts and "".join(a + b for a, b in parts) == v, v
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(a) * unit[b] for a, b in parts)


def memory_formula(values):
    """values.yaml's formula, in Python."""
    s, mem, res = values["server"], values["model"]["memory"], values["resources"]
    kv = mem["kvBytesPerTokenF16"] * (2 if s["kvType"] == "f32" else 1)
    slot = mem["stateBytesPerSlot"] + kv * s["ctxSize"]
    weights = mem["weightsBytes"] * (2 if s.get("packedWeights", True) else 1)
    return (weights + s["workers"] * s["slots"] * slot
            + s["workers"] * (s["prefixCacheMb"] * MiB + res["workerOverheadBytes"])
            + res["frontEndOverheadBytes"])


# Values that switch every optional feature on, to render every branch of the templates.
ALL_FEATURES = {
    "tls": {"enabled": True, "secretName": "qwen-tls", "clientCA": True},
    "auth": {"enabled": True, "secretName": "qwen-tokens", "exemptProbes": False},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "autoscaling": {"enabled": True, "provider": "hpa"},
    "logging": {"level": "info"},
    "server": {"limits": {"maxMessageBytes": 4194304, "maxConcurrentStreams": 100,
                          "maxTools": 64, "maxStopStrings": 16},
               "extraArgs": ["--max_retries=3"], "host": "::"},
    "model": {"download": {"cache": "cluster",
                           "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
                           "envFrom": [{"secretRef": {"name": "hf-token"}}]}},
    "route": {"enabled": True, "parentRefs": [{"name": "gateway", "namespace": "gw"}],
              "hostnames": ["qwen.example.com"], "sessionAffinity": {"enabled": True}},
    "ingress": {"enabled": True, "className": "nginx", "hosts": ["qwen.example.com"],
                "tls": [{"secretName": "qwen-example-tls", "hosts": ["qwen.example.com"]}]},
    "lifecycle": {"terminationGracePeriodSeconds": 100, "progressDeadlineSeconds": 2400},
    "podAnnotations": {"a": "b"},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "image": {"pullSecrets": [{"name": "registry"}]},
}

VARIANTS = {
    "defaults": [],
    "all-features": [ALL_FEATURES],
    "keda": [{"autoscaling": {"enabled": True, "provider": "keda"},
              "route": {"enabled": True, "kind": "HTTPRoute",
                        "parentRefs": [{"name": "gateway"}]}}],
    "tls-only": [{"tls": {"enabled": True, "secretName": "qwen-tls"}}],
    "auth-only": [{"auth": {"enabled": True, "secretName": "qwen-tokens"}}],
    "node-cache": [{"model": {"download": {"cache": "node"}}}],
    "node-cache-prepared": [{"model": {"download": {"cache": "node",
                                                    "nodePathSetOwner": False}}}],
    "pvc": [{"model": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "qwen"}}}],
    "image": [{"model": {"source": "image"}}],
    "metrics-off": [{"metrics": {"enabled": False}}],
    "no-network-policy": [{"networkPolicy": {"enabled": False}}],
    "f32-big": [{"server": {"kvType": "f32", "ctxSize": 262144, "workers": 1, "slots": 1,
                            "threads": 8}}],
    "burstable": [{"resources": {"limitCpu": False}}],
}


def values_of(overrides):
    v = d.chart_defaults()
    for o in overrides:
        v = d.merge(v, o)
    return v


def pod_downloads(v):
    return v["model"]["source"] == "url" and v["model"]["download"]["cache"] != "cluster"


class YamlFilesTest(unittest.TestCase):
    def test_every_yaml_file_parses(self):
        files = [p for p in glob.glob(os.path.join(d.DEPLOY, "**", "*.y*ml"), recursive=True)
                 if "/templates/" not in p]
        self.assertGreaterEqual(len(files), 6, files)
        for p in files:
            with self.subTest(file=os.path.relpath(p, d.ROOT)):
                with open(p) as f:
                    docs = list(yaml.safe_load_all(f))
                self.assertTrue(docs and all(isinstance(x, dict) for x in docs))

    def test_chart_yaml(self):
        c = d.load_yaml(os.path.join(d.CHART, "Chart.yaml"))
        self.assertEqual(c["apiVersion"], "v2")
        self.assertEqual(c["name"], "qwen-serve")
        self.assertEqual(c["type"], "application")
        self.assertRegex(c["version"], r"^\d+\.\d+\.\d+$")
        self.assertRegex(str(c["appVersion"]), r"^\d+\.\d+\.\d+$")
        self.assertIn("kubeVersion", c)
        # The chart's version of the server is the project's.
        with open(os.path.join(d.ROOT, "CMakeLists.txt")) as f:
            m = re.search(r"project\(qwen_serve VERSION (\S+)", f.read())
        self.assertEqual(str(c["appVersion"]), m.group(1))


class SchemaTest(unittest.TestCase):
    def setUp(self):
        self.schema = schema()
        jsonschema.Draft7Validator.check_schema(self.schema)
        self.validator = jsonschema.Draft7Validator(self.schema)
        self.defaults = d.chart_defaults()

    def test_defaults_are_valid(self):
        self.validator.validate(self.defaults)

    def test_every_model_values_file_is_valid(self):
        files = d.model_values_files()
        self.assertGreaterEqual(len(files), 3)
        for p in files:
            with self.subTest(file=os.path.relpath(p, d.ROOT)):
                state = d.load_yaml(p)
                self.assertLessEqual(set(state), {"release", "chartValues"})
                # Helm validates the coalesced values.
                self.validator.validate(d.merge(self.defaults, state["chartValues"]))

    def test_every_variant_is_valid(self):
        for name, overrides in VARIANTS.items():
            v = self.defaults
            for o in overrides:
                v = d.merge(v, o)
            with self.subTest(variant=name):
                self.validator.validate(v)

    def test_rejects_nonsense(self):
        """The schema alone (Python's jsonschema) refuses every schema case of BAD_VALUES."""
        for name, (override, _, template_only) in BAD_VALUES.items():
            if template_only:
                continue
            with self.subTest(case=name):
                errors = list(self.validator.iter_errors(d.merge(self.defaults, override)))
                self.assertTrue(errors, f"{name}: accepted {override}")


# Values Helm must refuse: (override, a word its message must contain, whether only the
# templates (not the schema) can see the problem).
BAD_VALUES = {
    "zero workers": ({"server": {"workers": 0}}, "workers", False),
    "port out of range": ({"server": {"port": 70000}}, "port", False),
    "port as text": ({"server": {"port": "grpc"}}, "port", False),
    "unknown kv type": ({"server": {"kvType": "q8_0"}}, "kvType", False),
    "tiny context": ({"server": {"ctxSize": 1}}, "ctxSize", False),
    "auto threads": ({"server": {"threads": 0}}, "threads", False),
    "relative socket dir": ({"server": {"socketDir": "run/qwen"}}, "socketDir", False),
    "socket dir too long": ({"server": {"socketDir": "/" + "a" * 80}}, "socketDir", False),
    "argument that is not a flag": ({"server": {"extraArgs": ["rm -rf /"]}}, "extraArgs", False),
    "message limit below 1 KiB": ({"server": {"limits": {"maxMessageBytes": 10}}},
                                  "maxMessageBytes", False),
    "misspelled limit": ({"server": {"limits": {"maxToolz": 3}}}, "maxToolz", False),
    "unknown model source": ({"model": {"source": "ftp"}}, "source", False),
    "short checksum": ({"model": {"sha256": "abc"}}, "sha256", False),
    "upper-case checksum": ({"model": {"sha256": "D" * 64}}, "sha256", False),
    "url without checksum": ({"model": {"sha256": ""}}, "sha256", False),
    "url source without url": ({"model": {"url": ""}}, "url", False),
    "pvc without claim": ({"model": {"source": "pvc"}}, "claimName", False),
    "file with a directory": ({"model": {"file": "../x.gguf"}}, "file", False),
    "not a gguf": ({"model": {"file": "model.bin"}}, "file", False),
    "no weights size": ({"model": {"memory": {"weightsBytes": 0}}}, "weightsBytes", False),
    "unknown cache": ({"model": {"download": {"cache": "disk"}}}, "cache", False),
    "node cache in /etc": ({"model": {"download": {"cache": "node", "nodePath": "/etc/qwen"}}},
                           "nodePath", False),
    "relative node path": ({"model": {"download": {"nodePath": "var/qwen"}}}, "nodePath", False),
    "cache without a download": ({"model": {"source": "image", "download": {"cache": "node"}}},
                                 "download.cache", True),
    "download cpu deleted with null": ({"model": {"download": {"resources": {"cpu": None}}}},
                                       "cpu", False),
    "download env without a name": ({"model": {"download": {"extraEnv": [{"value": "x"}]}}},
                                     "extraEnv", False),
    "root user": ({"securityContext": {"runAsUser": 0}}, "runAsUser", False),
    "unknown key": ({"server": {"wokers": 2}}, "wokers", False),
    "unknown top-level key": ({"replicas": 3}, "replicas", False),
    "memory in words": ({"resources": {"memory": "lots"}}, "memory", False),
    "tls without secret": ({"tls": {"enabled": True}}, "secretName", False),
    "auth without secret": ({"auth": {"enabled": True}}, "secretName", False),
    "negative grace": ({"server": {"gracePeriodSeconds": -1}}, "gracePeriodSeconds", False),
    "negative reload interval": ({"credentialsReloadSeconds": -1}, "credentialsReloadSeconds",
                                 False),
    "log format": ({"logging": {"format": "xml"}}, "format", False),
    "no replicas": ({"replicaCount": 0}, "replicaCount", False),
    "scale to zero": ({"autoscaling": {"enabled": True, "minReplicas": 0}}, "minReplicas",
                      False),
    "autoscaler max below min": ({"autoscaling": {"enabled": True, "minReplicas": 4,
                                                  "maxReplicas": 2}}, "maxReplicas", True),
    "autoscaling without metrics": ({"autoscaling": {"enabled": True},
                                     "metrics": {"enabled": False}}, "metrics.enabled", True),
    "unknown autoscaler": ({"autoscaling": {"provider": "cpu"}}, "provider", False),
    "slot target over 100%": ({"autoscaling": {"targetSlotUtilizationPercent": 150}},
                              "targetSlotUtilizationPercent", False),
    "zero queue target": ({"autoscaling": {"targetQueueDepth": 0}}, "targetQueueDepth", False),
    "keda without a Prometheus URL": ({"autoscaling": {"keda": {"serverAddress": "prometheus"}}},
                                      "serverAddress", False),
    "old CPU target key": ({"autoscaling": {"targetCPUUtilizationPercentage": 75}},
                           "targetCPUUtilizationPercentage", False),
    "service type": ({"service": {"type": "ExternalName"}}, "type", False),
    "tmp size not in Mi": ({"volumes": {"tmpSizeLimit": "1Gi"}}, "tmpSizeLimit", False),
    "metrics on the gRPC port": ({"metrics": {"port": 50051}}, "metrics.port", True),
    "health port on the gRPC port": ({"tls": {"enabled": True, "secretName": "t"},
                                      "probes": {"healthPort": 50051}}, "healthPort", True),
    "termination grace shorter than the drain": (
        {"lifecycle": {"terminationGracePeriodSeconds": 30}}, "terminationGracePeriodSeconds",
        True),
    "progress deadline shorter than download and start": (
        {"lifecycle": {"progressDeadlineSeconds": 600}}, "progressDeadlineSeconds", True),
    "route without a gateway": ({"route": {"enabled": True}}, "parentRefs", False),
    "route kind": ({"route": {"kind": "TCPRoute"}}, "kind", False),
    "affinity on the authorization header": ({"route": {"sessionAffinity": {
        "header": "authorization"}}}, "header", False),
    "ingress without hosts": ({"ingress": {"enabled": True}}, "hosts", False),
    "no download ports": ({"networkPolicy": {"downloadPorts": []}}, "downloadPorts", False),
    "misspelled peer": ({"networkPolicy": {"apiFrom": [{"podSelectr": {}}]}}, "podSelectr",
                        False),
}


class HelmTest(unittest.TestCase):
    """Helm 3 and Helm 4 themselves: lint, render, refuse."""

    def test_lint_and_render_on_helm_3_and_4(self):
        cases = {name: ([], overrides) for name, overrides in VARIANTS.items()}
        # The chart's own values.yaml passed back: Helm 3 drops its null keys, so none may be
        # null where the schema wants a value.
        cases["values.yaml with -f"] = ([os.path.join(d.CHART, "values.yaml")], [])
        for p in d.model_values_files():
            _, chart_values = d.helmfile_release(p)
            cases[os.path.relpath(p, d.MODEL_VALUES_DIR)] = ([], [chart_values])
        for name, (files, overrides) in cases.items():
            outputs = {}
            for helm in ("3", "4"):
                with self.subTest(case=name, helm=helm):
                    code, out = d.lint_chart(files, overrides, helm=helm)
                    self.assertEqual(code, 0, f"helm{helm} lint --strict, {name}:\n{out}")
                    self.assertIn("0 chart(s) failed", out)
                    outputs[helm] = d.render_chart(files, overrides, helm=helm)
            with self.subTest(case=name, check="helm 3 and 4 render the same"):
                self.assertEqual(outputs["3"], outputs["4"])

    def test_bad_values_are_refused_naming_the_field(self):
        for name, (override, word, template_only) in BAD_VALUES.items():
            for helm in ("3", "4"):
                with self.subTest(case=name, helm=helm):
                    with self.assertRaises(d.RenderError) as e:
                        d.render_chart(values=[override], helm=helm)
                    self.assertIn(word, str(e.exception), f"{name}: {e.exception}")
                    # Lint checks the schema; it turns the templates' `fail` into a note.
                    code, out = d.lint_chart(values=[override], helm=helm)
                    if template_only:
                        self.assertIn(word, out)
                    else:
                        self.assertNotEqual(code, 0, f"helm{helm} lint passed {name}")


class RenderTest(unittest.TestCase):
    """The chart renders for every variant and every model file, and the manifests agree."""

    @classmethod
    def setUpClass(cls):
        cls.defaults = d.chart_defaults()
        cls.known_flags = d.serve_help_flags()
        assert "check_config" in cls.known_flags, "qwen serve --help lists no --check_config"
        cls.rendered = {}
        cls.values = {}
        cls.namespaces = {}
        for name, overrides in VARIANTS.items():
            cls.rendered[name] = d.render_chart(values=overrides)
            cls.values[name] = values_of(overrides)
            cls.namespaces[name] = "qwen"
        for p in d.model_values_files():
            rel, chart_values = d.helmfile_release(p)
            name = os.path.relpath(p, d.MODEL_VALUES_DIR)
            cls.rendered[name] = d.render_chart(values=[chart_values],
                                                release=rel["name"], namespace=rel["namespace"])
            cls.values[name] = d.merge(cls.defaults, chart_values)
            cls.namespaces[name] = rel["namespace"]

    def each(self):
        for name in self.rendered:
            with self.subTest(variant=name):
                yield name, self.rendered[name], self.values[name]

    def test_schedules_on_any_architecture(self):
        """The image is built for linux/amd64 and linux/arm64 (docs/arm64.md), so no variant nor
        model file ties pods to one architecture: a node selector or affinity on
        kubernetes.io/arch is the user's to add."""
        for name, r, v in self.each():
            if "kubernetes.io/arch" in json.dumps(v):
                continue  # the values ask for it (the all-features variant does)
            text = json.dumps([m for _, m in r if isinstance(m, dict)])
            self.assertNotIn("kubernetes.io/arch", text)

    def test_kinds(self):
        for name, r, v in self.each():
            kinds = sorted(m["kind"] for _, m in r if isinstance(m, dict))
            want = ["Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"]
            if v["networkPolicy"]["enabled"]:
                want.append("NetworkPolicy")
            if v["autoscaling"]["enabled"]:
                want.append({"hpa": "HorizontalPodAutoscaler",
                             "keda": "ScaledObject"}[v["autoscaling"]["provider"]])
            if v["metrics"]["enabled"] and v["metrics"]["serviceMonitor"]["enabled"]:
                want.append("ServiceMonitor")
            if v["model"]["source"] == "url" and v["model"]["download"]["cache"] == "cluster":
                want += ["PersistentVolumeClaim", "Job"]
                if v["networkPolicy"]["enabled"]:
                    want.append("NetworkPolicy")
            if v["route"]["enabled"]:
                want.append(v["route"]["kind"])
            if v["route"]["sessionAffinity"]["enabled"]:
                want.append("DestinationRule")
            if v["ingress"]["enabled"]:
                want.append("Ingress")
            self.assertEqual(kinds, sorted(want))
            for _, m in r:
                if isinstance(m, dict):
                    self.assertIn("name", m["metadata"])
                    self.assertLessEqual(len(m["metadata"]["name"]), 63)

    def test_args_are_server_flags_and_check_config_accepts_them(self):
        for name, r, v in self.each():
            c = d.server_container(d.one(r, "Deployment"))
            sub, flags = d.parse_args(c["args"])
            self.assertEqual(sub, "serve")
            # Every flag the chart passes is one this `qwen serve` lists: none is skipped.
            self.assertEqual(d.unknown_flags(flags, self.known_flags), [], name)
            usable = flags
            # As rendered: the model and /run/qwen are not on this machine (noted, not checked).
            code, out, err = d.check_config(usable)
            self.assertEqual(code, 0, f"{name}: {err}\n{out}")
            for k, val in usable.items():
                got = out["flags"][k]
                if k.endswith(("period", "timeout", "age", "age_grace", "reload_interval")):
                    self.assertEqual(duration_seconds(val), duration_seconds(got), k)
                else:
                    self.assertEqual(got, val, k)
            # With the tiny model and a real directory in place of the volumes: the model is
            # checked and the memory estimated.
            with tempfile.TemporaryDirectory() as sockets:
                local = dict(usable, model=d.TINY_MODEL, socket_dir=sockets)
                code, out, err = d.check_config(local)
                self.assertEqual(code, 0, f"{name}: {err}\n{out}")
                self.assertTrue(out["model"]["checked"])
                self.assertEqual(out["model"]["architecture"], "qwen35")

    def test_args_follow_values(self):
        for name, r, v in self.each():
            c = d.server_container(d.one(r, "Deployment"))
            _, flags = d.parse_args(c["args"])
            s = v["server"]
            model_dir = v["model"]["image"]["dir"] if v["model"]["source"] == "image" else "/models"
            expect = {
                "model": f"{model_dir}/{v['model']['file']}", "host": s["host"],
                "port": str(s["port"]), "workers": str(s["workers"]), "slots": str(s["slots"]),
                "threads": str(s["threads"]), "ctx_size": str(s["ctxSize"]),
                "kv_type": s["kvType"], "socket_dir": s["socketDir"],
                "grace_period": f"{s['gracePeriodSeconds']}s",
                "max_connection_age": f"{s['maxConnectionAgeSeconds']}s",
                "metrics_port": str(v["metrics"]["port"] if v["metrics"]["enabled"] else 0),
            }
            for k, want in expect.items():
                self.assertEqual(flags.get(k), want, k)
            self.assertEqual("tls_cert" in flags, v["tls"]["enabled"])
            self.assertEqual("auth_tokens_file" in flags, v["auth"]["enabled"])
            # Rotated Secrets are picked up without a restart.
            self.assertEqual("credentials_reload_interval" in flags,
                             v["tls"]["enabled"] or v["auth"]["enabled"])
            for key, flag in (("maxMessageBytes", "max_message_bytes"),
                              ("maxConcurrentStreams", "max_concurrent_streams"),
                              ("maxTools", "max_tools"), ("maxStopStrings", "max_stop_strings")):
                self.assertEqual(flags.get(flag), str(s["limits"][key])
                                 if key in s["limits"] else None, flag)

    def test_ports_services_and_probes_agree(self):
        for name, r, v in self.each():
            dep = d.one(r, "Deployment")
            c = d.server_container(dep)
            _, flags = d.parse_args(c["args"])
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            self.assertEqual(ports["grpc"], int(flags["port"]))
            self.assertEqual(ports["grpc"], v["server"]["port"])
            if v["metrics"]["enabled"]:
                self.assertEqual(ports["metrics"], int(flags["metrics_port"]))
                self.assertNotEqual(ports["metrics"], ports["grpc"])
            else:
                self.assertNotIn("metrics", ports)
                self.assertEqual(flags["metrics_port"], "0")
            # The OpenAI-compatible HTTP API, on by default.
            if v["http"]["enabled"]:
                self.assertEqual(ports["http"], int(flags["http_port"]))
                self.assertEqual(ports["http"], v["http"]["port"])
                self.assertNotIn(ports["http"], (ports["grpc"], ports.get("metrics")))
            else:
                self.assertNotIn("http", ports)
                self.assertEqual(flags["http_port"], "0")
            selector = dep["spec"]["selector"]["matchLabels"]
            pod_labels = dep["spec"]["template"]["metadata"]["labels"]
            self.assertLessEqual(selector.items(), pod_labels.items())
            main = [s for s in d.manifests_of(r, "Service")
                    if s["spec"].get("clusterIP") != "None"][0]
            headless = [s for s in d.manifests_of(r, "Service")
                        if s["spec"].get("clusterIP") == "None"][0]
            self.assertEqual(headless["metadata"]["name"], main["metadata"]["name"] + "-headless")
            for svc in (main, headless):
                self.assertEqual(svc["spec"]["selector"], selector)
                for p in svc["spec"]["ports"]:
                    self.assertIn(p["targetPort"], ports, p)
                grpc = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"][0]
                self.assertEqual(grpc["port"], v["service"]["port"])
                self.assertEqual(grpc["appProtocol"], "grpc")
            self.assertFalse(headless["spec"].get("publishNotReadyAddresses", False))
            # Probes: always a gRPC health check of the probes' service: the kubelet's own on
            # the server's port, or, when that port speaks TLS or wants a token, `qwen health`
            # in the container against the loopback health port the server is told to open.
            health_port = v["tls"]["enabled"] or (v["auth"]["enabled"]
                                                  and not v["auth"]["exemptProbes"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c[probe]
                self.assertNotIn("tcpSocket", p)
                if health_port:
                    cmd = p["exec"]["command"]
                    self.assertEqual(cmd[:2], ["/usr/local/bin/qwen", "health"])
                    self.assertIn(f"--service={v['probes']['grpcService']}", cmd)
                    self.assertEqual(cmd[-1], f"127.0.0.1:{flags['health_port']}")
                    self.assertEqual(int(flags["health_port"]), v["probes"]["healthPort"])
                    timeout = [a for a in cmd if a.startswith("--probe_timeout=")][0]
                    self.assertLess(duration_seconds(timeout.split("=")[1]), p["timeoutSeconds"])
                    self.assertNotIn(v["probes"]["healthPort"], ports.values())
                else:
                    self.assertNotIn("health_port", flags)
                    self.assertEqual(p["grpc"]["port"], ports["grpc"])
                    self.assertEqual(p["grpc"]["service"], v["probes"]["grpcService"])
            # ServiceMonitor scrapes the main Service's metrics port.
            for sm in d.manifests_of(r, "ServiceMonitor"):
                sel = sm["spec"]["selector"]["matchLabels"]
                self.assertLessEqual(sel.items(), main["metadata"]["labels"].items())
                self.assertFalse(sel.items() <= headless["metadata"]["labels"].items())
                self.assertEqual(sm["spec"]["endpoints"][0]["port"], "metrics")
                self.assertIn("metrics", [p["name"] for p in main["spec"]["ports"]])

    def test_health_service_name_is_the_servers(self):
        with open(os.path.join(d.ROOT, "proto", "qwen", "v1", "qwen.proto")) as f:
            proto = f.read()
        package = re.search(r"^package ([\w.]+);", proto, re.M).group(1)
        services = re.findall(r"^service (\w+)", proto, re.M)
        with open(os.path.join(d.ROOT, "service", "front_end.cc")) as f:
            front_end = f.read()
        registered = re.search(r'kServiceName\[\] = "([\w.]+)"', front_end).group(1)
        name = self.defaults["probes"]["grpcService"]
        self.assertIn(name, [f"{package}.{s}" for s in services])
        self.assertEqual(name, registered)

    def test_timings(self):
        for name, r, v in self.each():
            dep = d.one(r, "Deployment")
            pod = dep["spec"]["template"]["spec"]
            c = d.server_container(dep)
            _, flags = d.parse_args(c["args"])
            grace = duration_seconds(flags["grace_period"])
            pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
            self.assertEqual(pre_stop[0], "/bin/sleep")
            sleep = int(pre_stop[1])
            tgps = pod["terminationGracePeriodSeconds"]
            # preStop, then SIGTERM: the drain, 1 s for gRPC to close, 5 s to stop the workers.
            self.assertGreaterEqual(tgps, sleep + grace + 6)
            # The startup budget covers a worker's whole start-up timeout.
            st = c["startupProbe"]
            self.assertGreaterEqual(st["periodSeconds"] * st["failureThreshold"],
                                    duration_seconds(flags["worker_startup_timeout"]))
            # Liveness outlasts a drain and a worker restart (back-off max 30 s + its start).
            lv = c["livenessProbe"]
            window = lv["periodSeconds"] * lv["failureThreshold"]
            self.assertGreater(window, tgps)
            self.assertGreater(window, 30 + 60)
            # The preStop sleep gives kube-proxy and proxies time to drop the terminating pod
            # from their endpoints before SIGTERM makes the server refuse new calls.
            self.assertGreaterEqual(sleep, 5)

    def test_security_and_writable_paths(self):
        with open(d.DOCKERFILE) as f:
            user = re.search(r"^USER (\d+):(\d+)$", f.read(), re.M)
        for name, r, v in self.each():
            dep = d.one(r, "Deployment")
            pod = dep["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"])
            self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
            self.assertFalse(pod["automountServiceAccountToken"])
            containers = pod["containers"] + pod.get("initContainers", [])
            for c in containers:
                sc = c["securityContext"]
                if c["name"] == "model-dir-owner":
                    # The one root container (cache node): a chown with CAP_CHOWN alone
                    # (test_model_caches).
                    self.assertEqual(sc["runAsUser"], 0)
                    self.assertEqual(sc["capabilities"]["add"], ["CHOWN"])
                    continue
                self.assertTrue(sc["readOnlyRootFilesystem"])
                self.assertFalse(sc["allowPrivilegeEscalation"])
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                self.assertTrue(sc["runAsNonRoot"])
                self.assertEqual(sc["seccompProfile"]["type"], "RuntimeDefault")
                self.assertEqual((str(sc["runAsUser"]), str(sc["runAsGroup"])), user.groups())
            c = d.server_container(dep)
            _, flags = d.parse_args(c["args"])
            env = {e["name"]: e["value"] for e in c.get("env", [])}
            # Every path the server writes is on a writable emptyDir.
            for path in (flags["socket_dir"], env["TMPDIR"]):
                found = d.mount_for(c, pod, path)
                self.assertIsNotNone(found, f"{path} is on the read-only root filesystem")
                mount, vol = found
                self.assertFalse(mount.get("readOnly", False), path)
                self.assertIn("emptyDir", vol, path)
            # The model is read-only wherever it comes from.
            found = d.mount_for(c, pod, flags["model"])
            if v["model"]["source"] == "image":
                self.assertIsNone(found)
            else:
                mount, vol = found
                self.assertTrue(mount["readOnly"])
                if v["model"]["source"] == "pvc":
                    self.assertTrue(vol["persistentVolumeClaim"]["readOnly"])
                    self.assertEqual(mount.get("subPath"), v["model"]["pvc"]["subPath"])
            # Secrets: mounted read-only where the flags point.
            for flag in ("tls_cert", "tls_key", "tls_client_ca", "auth_tokens_file"):
                if flag in flags:
                    mount, vol = d.mount_for(c, pod, flags[flag])
                    self.assertTrue(mount["readOnly"])
                    self.assertIn("secret", vol)
            # The download: the init container writes the model volume and nothing else (with
            # the cluster cache the Job writes it, and the pod only waits for it, read-only).
            inits = [c_ for c_ in pod.get("initContainers", []) if c_["name"] == "fetch-model"]
            self.assertEqual(bool(inits), pod_downloads(v))
            for w in pod.get("initContainers", []):
                if w["name"] == "wait-for-model":
                    self.assertTrue(w["volumeMounts"][0]["readOnly"])
            for ic in inits:
                cmd = ic["command"]
                self.assertEqual(cmd[0], "fetch-model")
                self.assertEqual(cmd[cmd.index("--sha256") + 1], v["model"]["sha256"])
                self.assertEqual(cmd[cmd.index("--url") + 1], v["model"]["url"])
                out_dir = cmd[cmd.index("--out") + 1]
                mount, vol = d.mount_for(ic, pod, out_dir)
                self.assertFalse(mount.get("readOnly", False))
                self.assertEqual(mount["name"], d.mount_for(c, pod, flags["model"])[0]["name"])
                self.assertEqual(os.path.join(out_dir, cmd[cmd.index("--file") + 1]),
                                 flags["model"])
                if "emptyDir" in vol:
                    size_limit = vol["emptyDir"]["sizeLimit"]
                    self.assertGreater(int(size_limit.rstrip("Mi")) * MiB,
                                       v["model"]["memory"]["weightsBytes"])

    def test_resources_follow_the_memory_formula(self):
        for name, r, v in self.each():
            c = d.server_container(d.one(r, "Deployment"))
            req, lim = c["resources"]["requests"], c["resources"]["limits"]
            want_mib = math.ceil(memory_formula(v) / MiB)
            self.assertEqual(req["memory"], f"{want_mib}Mi")
            self.assertEqual(lim["memory"], req["memory"])
            self.assertEqual(req["cpu"], str(v["server"]["workers"] * v["server"]["threads"]))
            # The node must have disk for the emptyDirs: the downloaded model and /tmp.
            disk = int(req["ephemeral-storage"].rstrip("Mi")) * MiB
            want = int(v["volumes"]["tmpSizeLimit"].rstrip("Mi")) * MiB
            if v["model"]["source"] == "url" and v["model"]["download"]["cache"] == "pod":
                want += v["model"]["memory"]["weightsBytes"]
            self.assertGreaterEqual(disk, want)

    def test_model_values_files_state_their_resources(self):
        """The comment of each per-model file says what the chart gives it."""
        for p in d.model_values_files():
            name = os.path.relpath(p, d.MODEL_VALUES_DIR)
            with self.subTest(file=name):
                with open(p) as f:
                    text = f.read()
                c = d.server_container(d.one(self.rendered[name], "Deployment"))
                stated = dict(re.findall(r"^#\s+(memory|cpu): (\S+)", text, re.M))
                self.assertEqual(stated.get("memory"), c["resources"]["requests"]["memory"])
                self.assertEqual(stated.get("cpu"), c["resources"]["requests"]["cpu"])

    def test_memory_formula_matches_check_config(self):
        """The chart and `qwen serve --check_config` compute the same memory (tiny model)."""
        with tempfile.TemporaryDirectory() as sockets:
            for workers, slots, ctx, kv in ((2, 4, 2048, "f16"), (3, 2, 8192, "f32")):
                code, out, err = d.check_config({
                    "model": d.TINY_MODEL, "workers": workers, "slots": slots,
                    "ctx_size": ctx, "kv_type": kv, "threads": 1, "socket_dir": sockets,
                    # The chart always passes its own budget; the server's default is auto.
                    "prefix_cache_mb": self.defaults["server"]["prefixCacheMb"]})
                self.assertEqual(code, 0, err)
                m = out["memory"]
                kv16 = m["kv_bytes_per_token"] // (2 if kv == "f32" else 1)
                values = {
                    "model": {"memory": {"weightsBytes": m["weights_bytes"],
                                         "stateBytesPerSlot": m["state_bytes_per_slot"],
                                         "kvBytesPerTokenF16": kv16}},
                    "server": {"workers": workers, "slots": slots, "ctxSize": ctx, "kvType": kv,
                               "threads": 1},
                }
                r = d.render_chart(values=[values])
                c = d.server_container(d.one(r, "Deployment"))
                self.assertEqual(c["resources"]["requests"]["memory"],
                                 f"{math.ceil(m['total_bytes'] / MiB)}Mi")
                self.assertEqual(m["worker_overhead_bytes"],
                                 self.defaults["resources"]["workerOverheadBytes"])
                self.assertEqual(m["front_end_overhead_bytes"],
                                 self.defaults["resources"]["frontEndOverheadBytes"])

    def test_notes_render(self):
        for name, want in (("defaults", "grpcurl -plaintext localhost:50051"),
                           ("all-features", 'grpcurl -cacert ca.pem -cert client.pem -key '
                                            'client.key -H "authorization: Bearer $TOKEN" '
                                            'localhost:50051')):
            notes = d.render_notes(VARIANTS[name])
            self.assertIn("port-forward service/qwen-qwen-serve", notes)
            self.assertIn(want, notes)

    def test_every_object_matches_its_schema(self):
        """Every rendered object of every variant, Helm 3's and Helm 4's, against the schema of
        its kind with the strict field check; and the check's own negative controls."""
        objects = []
        for name, r, v in self.each():
            for i, (src, m) in enumerate(r):
                objects.append((f"{name}:{src}#{i}", m))
        for name, overrides in (("all-features", [ALL_FEATURES]), ("keda", VARIANTS["keda"])):
            for i, (src, m) in enumerate(d.render_chart(values=overrides, helm="4")):
                objects.append((f"helm4 {name}:{src}#{i}", m))
        errors = d.validate_objects(objects)
        self.assertEqual(errors, [])
        kinds = {m["kind"] for _, m in objects}
        self.assertGreaterEqual(kinds, {"Deployment", "Service", "NetworkPolicy", "Job",
                                        "PersistentVolumeClaim", "HorizontalPodAutoscaler",
                                        "ScaledObject", "ServiceMonitor", "GRPCRoute",
                                        "HTTPRoute", "DestinationRule", "Ingress",
                                        "PodDisruptionBudget", "ServiceAccount"})

    def test_schema_check_catches_misspellings_and_wrong_types(self):
        dep = d.one(self.rendered["all-features"], "Deployment")
        so = d.one(d.render_chart(values=VARIANTS["keda"]), "ScaledObject")

        def changed(obj, edit):
            o = json.loads(json.dumps(obj))
            edit(o)
            return o
        pod = lambda o: o["spec"]["template"]["spec"]  # noqa: E731
        cases = {
            "misspelled container field": changed(
                dep, lambda o: pod(o)["containers"][0].update(imagePullPolice="Always")),
            "misspelled field deep in a probe": changed(
                dep, lambda o: pod(o)["containers"][0]["livenessProbe"].update(periodSecond=3)),
            "misspelled spec field": changed(dep, lambda o: o["spec"].update(replicass=2)),
            "misspelled CRD field": changed(
                so, lambda o: o["spec"]["triggers"][0].update(metadta={})),
            "wrong type": changed(dep, lambda o: o["spec"].update(replicas="two")),
            "missing required field": changed(
                dep, lambda o: pod(o)["containers"][0].pop("name")),
            "unknown kind": {"apiVersion": "example.com/v1", "kind": "Thing",
                             "metadata": {"name": "x"}},
        }
        for name, obj in cases.items():
            with self.subTest(case=name):
                self.assertTrue(d.validate_objects([(name, obj)]), f"{name} passed")

    def test_qos_class_is_guaranteed_where_the_chart_claims_it(self):
        for name, r, v in self.each():
            pod = d.one(r, "Deployment")["spec"]["template"]["spec"]
            want = "Guaranteed" if v["resources"]["limitCpu"] else "Burstable"
            self.assertEqual(d.qos_class(pod), want, name)
            if want == "Guaranteed":
                # Whole cores for the static CPU manager: an integer CPU count.
                cpu = d.server_container(d.one(r, "Deployment"))["resources"]["limits"]["cpu"]
                self.assertEqual(d.quantity(cpu).denominator, 1, cpu)
        for job in (m for name, r, v in self.each() for m in d.manifests_of(r, "Job")):
            self.assertEqual(d.qos_class(job["spec"]["template"]["spec"]), "Guaranteed")

    def test_qos_rule(self):
        """The rule itself, on the cases Kubernetes' own tests name."""
        def c(req=None, lim=None):
            return {"name": "c", "resources": {"requests": req or {}, "limits": lim or {}}}
        g = {"cpu": "1", "memory": "1Gi"}
        cases = [
            ({"containers": [c()]}, "BestEffort"),
            ({"containers": [c(g, g)]}, "Guaranteed"),
            ({"containers": [c(None, g)]}, "Guaranteed"),  # requests default to limits
            ({"containers": [c({"cpu": "1000m", "memory": "1024Mi"}, g)]}, "Guaranteed"),
            ({"containers": [c(g, {"memory": "1Gi"})]}, "Burstable"),
            ({"containers": [c({"cpu": "500m", "memory": "1Gi"}, g)]}, "Burstable"),
            # The first chart's pod: the init container asked 100m / 64Mi, limited only memory.
            ({"containers": [c(g, g)],
              "initContainers": [c({"cpu": "100m", "memory": "64Mi"}, {"memory": "512Mi"})]},
             "Burstable"),
            ({"containers": [c(g, g)], "initContainers": [c(g, g)]}, "Guaranteed"),
        ]
        for spec, want in cases:
            self.assertEqual(d.qos_class(spec), want, spec)

    def test_network_policy(self):
        for name, r, v in self.each():
            nps = {m["metadata"]["name"]: m for m in d.manifests_of(r, "NetworkPolicy")}
            if not v["networkPolicy"]["enabled"]:
                self.assertEqual(nps, {})
                continue
            dep = d.one(r, "Deployment")
            c = d.server_container(dep)
            np = nps[dep["metadata"]["name"]]
            self.assertEqual(np["spec"]["podSelector"]["matchLabels"],
                             dep["spec"]["selector"]["matchLabels"])
            self.assertEqual(sorted(np["spec"]["policyTypes"]), ["Egress", "Ingress"])
            # Ingress: only named container ports, the API to apiFrom (anyone by default) and
            # the metrics to the monitoring namespace.
            ports = {p["name"] for p in c["ports"]}
            rules = {r_["ports"][0]["port"]: r_ for r_ in np["spec"]["ingress"]}
            self.assertEqual(set(rules), ports)
            self.assertNotIn("from", rules["grpc"])
            if "http" in rules:
                self.assertEqual(rules["http"].get("from"), rules["grpc"].get("from"))
            if "metrics" in rules:
                self.assertEqual(rules["metrics"]["from"], v["networkPolicy"]["metricsFrom"])
                self.assertEqual(rules["metrics"]["from"][0]["namespaceSelector"]["matchLabels"],
                                 {"kubernetes.io/metadata.name": "monitoring"})
            # Egress: DNS and HTTPS while the pod downloads, nothing otherwise.
            egress = np["spec"]["egress"]
            if pod_downloads(v):
                self.assertEqual(len(egress), 2)
                self.assertEqual({p["port"] for p in egress[0]["ports"]}, {53})
                self.assertEqual([p["port"] for p in egress[1]["ports"]], [443])
            else:
                self.assertEqual(egress, [])
            for job in d.manifests_of(r, "Job"):
                labels = job["spec"]["template"]["metadata"]["labels"]
                fetch = [m for m in nps.values()
                         if m["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
                self.assertEqual(len(fetch), 1)
                self.assertEqual(fetch[0]["spec"]["ingress"], [])
                self.assertEqual(len(fetch[0]["spec"]["egress"]), 2)

    def test_autoscaler_reads_the_servers_gauges(self):
        with open(os.path.join(d.ROOT, "service", "metrics.cc")) as f:
            exported = set(re.findall(r'"(qwen_[a-z_]+)"', f.read()))
        adapter = d.load_yaml(os.path.join(d.DEPLOY, "prometheus-adapter", "values.yaml"))
        adapter_metrics = {r["name"]["as"]: r for r in adapter["rules"]["custom"]}
        for rule in adapter["rules"]["custom"]:
            for series in re.findall(r"\b(qwen_[a-z_]+)\{", rule["seriesQuery"]
                                     + rule["metricsQuery"]):
                self.assertIn(series, exported, rule)
        seen = set()
        for name, r, v in self.each():
            a = v["autoscaling"]
            dep = d.one(r, "Deployment")
            if not a["enabled"]:
                self.assertIn("replicas", dep["spec"])
                continue
            self.assertNotIn("replicas", dep["spec"], "the autoscaler owns the count")
            if a["provider"] == "hpa":
                hpa = d.one(r, "HorizontalPodAutoscaler")
                target = hpa["spec"]["scaleTargetRef"]
                self.assertEqual(hpa["spec"]["minReplicas"], a["minReplicas"])
                metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"]
                           for m in hpa["spec"]["metrics"]}
                self.assertEqual(set(metrics), set(adapter_metrics))
                self.assertEqual(d.quantity(metrics["qwen_queue_depth"]),
                                 Fraction(str(a["targetQueueDepth"])))
                self.assertEqual(d.quantity(metrics["qwen_slot_utilization"]),
                                 Fraction(a["targetSlotUtilizationPercent"], 100))
                behavior = hpa["spec"]["behavior"]
            else:
                so = d.one(r, "ScaledObject")
                target = so["spec"]["scaleTargetRef"]
                self.assertGreaterEqual(so["spec"]["minReplicaCount"], 1, "no scale to zero")
                slots = v["server"]["workers"] * v["server"]["slots"]
                svc = dep["metadata"]["name"]
                for t in so["spec"]["triggers"]:
                    q = t["metadata"]["query"]
                    for series in re.findall(r"\b(qwen_[a-z_]+)\{", q):
                        self.assertIn(series, exported)
                    self.assertIn(f'namespace="{self.namespaces[name]}"', q)
                    self.assertIn(f'service="{svc}"', q)
                    self.assertEqual(t["metricType"], "AverageValue")
                thresholds = {t["name"]: float(t["metadata"]["threshold"])
                              for t in so["spec"]["triggers"]}
                self.assertEqual(thresholds["queue-depth"], a["targetQueueDepth"])
                self.assertAlmostEqual(thresholds["busy-slots"],
                                       slots * a["targetSlotUtilizationPercent"] / 100)
                behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
            self.assertEqual((target["kind"], target["name"]), ("Deployment", dep["metadata"]["name"]))
            self.assertEqual(behavior["scaleDown"]["stabilizationWindowSeconds"],
                             a["scaleDownStabilizationSeconds"])
            seen.add(a["provider"])
        self.assertEqual(seen, {"hpa", "keda"})

    def test_routes_and_session_affinity(self):
        for name, r, v in self.each():
            main = [s_ for s_ in d.manifests_of(r, "Service")
                    if s_["spec"].get("clusterIP") != "None"][0]
            for kind in ("GRPCRoute", "HTTPRoute"):
                for route in d.manifests_of(r, kind):
                    self.assertEqual(route["spec"]["parentRefs"], v["route"]["parentRefs"])
                    for rule in route["spec"]["rules"]:
                        for b in rule["backendRefs"]:
                            self.assertEqual(b["name"], main["metadata"]["name"])
                            self.assertEqual(b["port"], main["spec"]["ports"][0]["port"])
                    if kind == "GRPCRoute":
                        services = {m["method"]["service"] for m in route["spec"]["rules"][0]["matches"]}
                        self.assertIn(v["probes"]["grpcService"], services)
            for dr in d.manifests_of(r, "DestinationRule"):
                self.assertEqual(dr["spec"]["host"], f"{main['metadata']['name']}."
                                 f"{self.namespaces[name]}.svc.cluster.local")
                self.assertEqual(
                    dr["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"],
                    {"httpHeaderName": v["route"]["sessionAffinity"]["header"]})
            for ing in d.manifests_of(r, "Ingress"):
                backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
                self.assertEqual(backend, {"name": main["metadata"]["name"],
                                           "port": {"name": "grpc"}})

    def test_model_caches(self):
        for name, r, v in self.each():
            dep = d.one(r, "Deployment")
            pod = dep["spec"]["template"]["spec"]
            inits = {c["name"]: c for c in pod.get("initContainers", [])}
            c = d.server_container(dep)
            _, flags = d.parse_args(c["args"])
            mount, vol = d.mount_for(c, pod, flags["model"]) or (None, None)
            if v["model"]["source"] != "url":
                self.assertEqual(inits, {})
                continue
            cache = v["model"]["download"]["cache"]
            # The download's environment (proxy, token) wherever it runs.
            for fetch in [inits.get("fetch-model")] + [
                    j["spec"]["template"]["spec"]["containers"][0]
                    for j in d.manifests_of(r, "Job")]:
                if fetch is None:
                    continue
                self.assertEqual(fetch["env"][1:], v["model"]["download"]["extraEnv"])
                self.assertEqual(fetch.get("envFrom", []), v["model"]["download"]["envFrom"])
            if cache == "pod":
                self.assertEqual(list(inits), ["fetch-model"])
                self.assertIn("emptyDir", vol)
            elif cache == "node":
                self.assertEqual(vol["hostPath"]["path"], v["model"]["download"]["nodePath"])
                want = ["fetch-model"]
                if v["model"]["download"]["nodePathSetOwner"]:
                    want.insert(0, "model-dir-owner")
                    sc = inits["model-dir-owner"]["securityContext"]
                    # Root for one chown, with CAP_CHOWN alone.
                    self.assertEqual(sc["capabilities"], {"drop": ["ALL"], "add": ["CHOWN"]})
                    self.assertFalse(sc["allowPrivilegeEscalation"])
                    self.assertTrue(sc["readOnlyRootFilesystem"])
                    self.assertEqual(inits["model-dir-owner"]["command"][-1], "/models")
                self.assertEqual(list(inits), want)
                self.assertEqual(c["resources"]["requests"]["ephemeral-storage"],
                                 v["volumes"]["tmpSizeLimit"], "the model is not on the pod's disk")
            else:
                self.assertEqual(list(inits), ["wait-for-model"])
                cmd = inits["wait-for-model"]["command"]
                self.assertEqual(cmd[:3], ["fetch-model", "--wait",
                                           str(v["model"]["download"]["budgetSeconds"])])
                self.assertTrue(inits["wait-for-model"]["volumeMounts"][0]["readOnly"])
                pvc = d.one(r, "PersistentVolumeClaim")
                self.assertEqual(vol["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"])
                self.assertEqual(pvc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
                job = d.one(r, "Job")
                jpod = job["spec"]["template"]["spec"]
                [jc] = jpod["containers"]
                self.assertEqual(jc["command"][0], "fetch-model")
                self.assertEqual(jc["command"][jc["command"].index("--sha256") + 1],
                                 v["model"]["sha256"])
                self.assertEqual(jpod["volumes"][0]["persistentVolumeClaim"]["claimName"],
                                 pvc["metadata"]["name"])
                # No Service, PDB or NetworkPolicy of the server selects the download's pod.
                labels = job["spec"]["template"]["metadata"]["labels"]
                self.assertFalse(dep["spec"]["selector"]["matchLabels"].items() <= labels.items())
                self.assertEqual(job["spec"]["activeDeadlineSeconds"],
                                 v["model"]["download"]["budgetSeconds"])
                # A Job's pod template cannot change: its name follows the template, so an
                # upgrade with another image or download setting creates a new Job instead of
                # failing on an immutable field, and the same values keep the same Job.
                again = d.one(d.render_chart(values=VARIANTS[name]), "Job")
                self.assertEqual(again["metadata"]["name"], job["metadata"]["name"])
                for change in ({"image": {"tag": "9.9.9"}},
                               {"model": {"download": {"extraEnv": [{"name": "NO_PROXY",
                                                                     "value": ".svc"}]}}}):
                    other = d.one(d.render_chart(values=VARIANTS[name] + [change]), "Job")
                    self.assertNotEqual(other["metadata"]["name"], job["metadata"]["name"])
            # The rollout's deadline covers the download and the start.
            deadline = dep["spec"]["progressDeadlineSeconds"]
            self.assertGreaterEqual(deadline, v["model"]["download"]["budgetSeconds"]
                                    + v["probes"]["startup"]["budgetSeconds"])


class CheckConfigTest(unittest.TestCase):
    """`qwen serve --check_config`: the contract the deployment tests and operators rely on."""

    def run_check(self, *args, user=None):
        cmd = [d.QWEN, "serve", "--check_config", *args]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def test_valid_with_the_model(self):
        r = self.run_check("--model", d.TINY_MODEL, "--workers=3", "--ctx-size=1024")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("valid", r.stdout.splitlines()[0])
        self.assertIn("  --workers=3", r.stdout)
        self.assertIn("  --ctx_size=1024", r.stdout)
        self.assertRegex(r.stdout, r"memory: weights \d+ \+ packed copy \d+ \+ 3 workers x 4 slots")

    def test_model_absent_or_not_given_is_a_note(self):
        for args in ((), ("--model=/nonexistent/model.gguf",)):
            r = self.run_check("--json", *args)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            out = json.loads(r.stdout)
            self.assertFalse(out["model"]["checked"])
            self.assertNotIn("memory", out)
            self.assertTrue(any("model" in n for n in out["notes"]))

    def test_invalid_exits_2_naming_the_problem(self):
        other_arch = os.path.join(d.ROOT, "tests", "data", "models", "mmproj-tiny-qwen35-f16.gguf")
        with tempfile.NamedTemporaryFile(suffix=".gguf") as junk:
            junk.write(b"not a gguf file")
            junk.flush()
            cases = {
                ("--model", other_arch): "architecture",
                ("--model", junk.name): "--model",
                ("--workers=0",): "--workers",
                ("--kv_type=q8",): "--kv_type",
                ("--port=65536",): "--port",
                ("--grace_period=-1s",): "--grace_period",
                ("--socket_dir=/" + "d" * 100,): "--socket_dir",
                ("--restart_backoff_min=10s", "--restart_backoff_max=1s"): "restart_backoff_max",
                # The security and limit flags, as the server would refuse them at start-up.
                ("--tls_cert=/etc/qwen/tls/tls.crt",): "--tls_key",
                ("--tls_client_ca=/etc/qwen/tls/ca.crt",): "--tls_client_ca needs TLS",
                ("--max_message_bytes=10",): "--max_message_bytes",
                ("--max_concurrent_streams=0",): "--max_concurrent_streams",
                ("--max_connection_age=720h",): "--max_connection_age",
                ("--log_level=loud",): "--log_level",
                # The probes' loopback port and the reloading of credential files.
                ("--health_port=50051", "--port=50051"): "--health_port",
                ("--health_port=70000",): "--health_port",
                ("--credentials_reload_interval=-1s",): "--credentials_reload_interval",
                # The worker's RLIMIT_DATA counts the KV cache reserved for every slot's context.
                ("--model", d.TINY_MODEL, "--ctx_size=65536", "--worker_memory_limit=64M"):
                    "--worker_memory_limit",
            }
            for args, word in cases.items():
                with self.subTest(args=args):
                    r = self.run_check(*args)
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    self.assertIn(word, r.stdout + r.stderr)

    def test_unknown_flag_exits_2(self):
        r = self.run_check("--no_such_flag=1")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown flag --no_such_flag", r.stderr)

    def test_socket_dir_not_writable_by_the_user(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run as another user")
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)  # root's, not writable by 65532
            r = self.run_check(f"--socket_dir={tmp}", user=65532)
            self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
            self.assertIn("not writable by this user (uid 65532)", r.stdout)
            os.chmod(tmp, 0o1777)
            r = self.run_check(f"--socket_dir={tmp}", user=65532)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class HelmfileTest(unittest.TestCase):
    def test_releases_of_every_model_file(self):
        for p in d.model_values_files():
            with self.subTest(file=os.path.relpath(p, d.ROOT)):
                state = d.load_yaml(p)
                rel, values = d.helmfile_release(p)
                self.assertEqual(os.path.normpath(os.path.join(d.DEPLOY, rel["chart"])), d.CHART)
                self.assertEqual(rel["name"], state["release"]["name"])
                self.assertEqual(rel["namespace"], state["release"]["namespace"])
                # The file's chart values, and the image from --state-values-set.
                self.assertEqual(values, d.merge(state["chartValues"], {
                    "image": {"repository": "registry.example.com/qwen-serve"}}))

    def test_empty_or_foreign_state_values_fail(self):
        """`<(curl -fsSL ...)` of a 404 is an empty file: helmfile must fail, not deploy."""
        with tempfile.TemporaryDirectory() as tmp:
            empty = os.path.join(tmp, "empty.yaml")
            open(empty, "w").close()
            other = os.path.join(tmp, "other.yaml")
            with open(other, "w") as f:
                f.write("chartValues:\n  replicaCount: 3\n")
            html = os.path.join(tmp, "page.yaml")
            with open(html, "w") as f:
                f.write("<html><body>404 Not Found</body></html>\n")
            for path in (None, empty, other):
                with self.subTest(state=path):
                    with self.assertRaises(d.RenderError):
                        d.render_helmfile(path)
            with self.assertRaises((d.RenderError, yaml.YAMLError, AssertionError)):
                d.helmfile_release(html)

    def test_image_repository_is_required(self):
        """Without it the pods would wait 30 minutes on an image that exists nowhere."""
        for p in d.model_values_files():
            with self.subTest(file=os.path.relpath(p, d.ROOT)):
                self.assertNotIn("repository", d.load_yaml(p)["chartValues"].get("image", {}))
                with self.assertRaises(d.RenderError) as e:
                    d.render_helmfile(p, sets=())
                self.assertIn("chartValues.image.repository is not set", str(e.exception))
                rel, values = d.helmfile_release(p, sets=(
                    ("chartValues.image.repository", "registry.example.com/qwen-serve"),))
                self.assertEqual(values["image"]["repository"], "registry.example.com/qwen-serve")

    def test_wait_outlasts_the_progress_deadline(self):
        for p in d.model_values_files():
            with self.subTest(file=os.path.relpath(p, d.ROOT)):
                rel, values = d.helmfile_release(p)
                dep = d.one(d.render_chart(values=[values]), "Deployment")
                self.assertTrue(rel["wait"])
                self.assertGreater(int(rel["timeout"]), dep["spec"]["progressDeadlineSeconds"])

    def test_prometheus_adapter_release(self):
        with tempfile.TemporaryDirectory() as tmp:
            state = os.path.join(tmp, "state.yaml")
            with open(state, "w") as f:
                yaml.safe_dump(d.merge(d.load_yaml(d.model_values_files()[0]),
                                       {"prometheusAdapter": {"enabled": True}}), f)
            docs = d.render_helmfile(state)
        releases = {r["name"]: r for doc in docs for r in doc.get("releases", [])}
        adapter = releases["prometheus-adapter"]
        self.assertEqual(adapter["chart"], "prometheus-community/prometheus-adapter")
        repos = [r["name"] for doc in docs for r in doc.get("repositories", [])]
        self.assertIn("prometheus-community", repos)
        self.assertTrue(os.path.exists(os.path.join(d.DEPLOY, adapter["values"][0])))
        # Off by default.
        docs = d.render_helmfile(d.model_values_files()[0])
        self.assertEqual([r["name"] for doc in docs for r in doc.get("releases", [])],
                         [d.load_yaml(d.model_values_files()[0])["release"]["name"]])

    def test_docs_use_curl_fail(self):
        texts = []
        for p in (d.HELMFILE, os.path.join(d.ROOT, "README.md"),
                  os.path.join(d.ROOT, "docs", "deploy.md")):
            with open(p) as f:
                texts.append((p, f.read()))
        seen = False
        for p, text in texts:
            for line in text.splitlines():
                if "state-values-file" in line and "curl" in line:
                    seen = True
                    self.assertIn("curl -fsSL", line, f"{p}: {line}")
        self.assertTrue(seen)


class ModelFilesTest(unittest.TestCase):
    def test_model_values_match_fetch_model(self):
        script = os.path.join(d.ROOT, "scripts", "fetch-model")
        for p in d.model_values_files():
            state = d.load_yaml(p)
            quant = os.path.basename(os.path.dirname(p))
            with self.subTest(quant=quant):
                r = subprocess.run([script, "--quant", quant, "--dry-run"],
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stderr)
                known = dict(line.split(" ", 1) for line in r.stdout.splitlines())
                m = state["chartValues"]["model"]
                self.assertEqual(m["url"], known["url"])
                self.assertEqual(m["sha256"], known["sha256"])
                self.assertEqual(str(m["memory"]["weightsBytes"]), known["size"])
                self.assertEqual(m["file"], os.path.basename(known["path"]))
                self.assertIn("/resolve/", m["url"])
                self.assertRegex(m["url"], r"/resolve/[0-9a-f]{40}/", "pin a revision")
        # The chart's default model is the Q3_K_M file.
        defaults = d.chart_defaults()["model"]
        q3 = d.load_yaml(os.path.join(d.MODEL_VALUES_DIR, "qwen3-5-4b", "q3_k_m", "cpu.yaml"))
        for k in ("file", "url", "sha256", "memory"):
            self.assertEqual(defaults[k], q3["chartValues"]["model"][k], k)

    def test_production_values_turn_auth_on(self):
        for p in d.model_values_files():
            with self.subTest(file=os.path.relpath(p, d.ROOT)):
                auth = d.load_yaml(p)["chartValues"]["auth"]
                self.assertTrue(auth["enabled"])
                self.assertTrue(auth["secretName"])
                with open(p) as f:
                    self.assertIn(f"create secret generic {auth['secretName']}", f.read())

    def test_architecture_sizes_agree_across_quantizations(self):
        """State and KV sizes depend on the architecture, not on the quantization."""
        sizes = set()
        for p in d.model_values_files():
            mem = d.load_yaml(p)["chartValues"]["model"]["memory"]
            sizes.add((mem["stateBytesPerSlot"], mem["kvBytesPerTokenF16"]))
        self.assertEqual(len(sizes), 1, sizes)


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(d.DOCKERFILE) as f:
            text = f.read()
        cls.text = text
        # Instructions with their continuation lines joined.
        joined = re.sub(r"\\\n", " ", text)
        cls.instructions = [line.strip() for line in joined.splitlines()
                            if line.strip() and not line.lstrip().startswith("#")]
        cls.stages = []
        for ins in cls.instructions:
            if ins.startswith("FROM "):
                cls.stages.append([ins])
            elif cls.stages:
                cls.stages[-1].append(ins)

    def stage(self, name):
        [s] = [s for s in self.stages if s[0].endswith(f" AS {name}")]
        return s

    def test_stages(self):
        froms = [s[0] for s in self.stages]
        # The build stage compiles on the builder's platform (natively or a cross build), the
        # runtime stage is the image's platform.
        self.assertEqual(froms[0], "FROM --platform=$BUILDPLATFORM ${BUILD_IMAGE} AS build")
        self.assertEqual(froms[-1], "FROM ${RUNTIME_IMAGE} AS runtime")
        build = " ".join(self.stage("build"))
        self.assertIn("scripts/setup.sh", build, "the build stage uses the README's set-up script")

    def test_base_images_pinned_by_digest(self):
        args = dict(re.findall(r"^ARG (BUILD_IMAGE|RUNTIME_IMAGE)=(\S+)$", self.text, re.M))
        self.assertRegex(args["BUILD_IMAGE"], r"^debian:bookworm@sha256:[0-9a-f]{64}$")
        self.assertRegex(args["RUNTIME_IMAGE"], r"^debian:bookworm-slim@sha256:[0-9a-f]{64}$")
        # Every stage starts from one of them, and the file says how to update them.
        for s_ in self.stages:
            self.assertRegex(s_[0],
                             r"^FROM (--platform=\$BUILDPLATFORM )?\$\{(BUILD|RUNTIME)_IMAGE\} AS \w+$")
        self.assertIn("docker buildx imagetools inspect debian:bookworm-slim", self.text)

    def test_documented_build_tags_the_charts_version(self):
        app = str(d.load_yaml(os.path.join(d.CHART, "Chart.yaml"))["appVersion"])
        with open(os.path.join(d.ROOT, "docs", "deploy.md")) as f:
            doc = f.read()
        for tool in ("docker", "podman"):
            self.assertRegex(doc, rf"{tool} build -f deploy/docker/Dockerfile -t \S+/qwen-serve:"
                             + re.escape(app) + " ")
        self.assertIn("helm-diff", doc)
        with open(os.path.join(d.ROOT, "README.md")) as f:
            self.assertIn("docs/deploy.md", f.read())

    def test_runtime_user_and_entrypoint(self):
        rt = self.stage("runtime")
        users = [i for i in rt if i.startswith("USER ")]
        self.assertEqual(len(users), 1)
        uid, gid = re.fullmatch(r"USER (\d+):(\d+)", users[0]).groups()
        self.assertNotEqual(uid, "0")
        values = d.chart_defaults()["securityContext"]
        self.assertEqual((int(uid), int(gid)), (values["runAsUser"], values["runAsGroup"]))
        self.assertIn('ENTRYPOINT ["/usr/local/bin/qwen"]', rt)
        self.assertTrue(any("TMPDIR=/tmp" in i for i in rt if i.startswith("ENV ")))
        expose = [i for i in rt if i.startswith("EXPOSE ")][0].split()[1:]
        defaults = d.chart_defaults()
        self.assertIn(str(defaults["server"]["port"]), expose)
        self.assertIn(str(defaults["metrics"]["port"]), expose)

    def test_no_model_by_default(self):
        model = self.stage("model")
        for arg in ("MODEL_QUANT", "MODEL_URL", "MODEL_SHA256"):
            self.assertIn(f'ARG {arg}=""', model)
        rt = " ".join(self.stage("runtime"))
        image_dir = d.chart_defaults()["model"]["image"]["dir"]
        self.assertIn(f"COPY --from=model {image_dir} {image_dir}", rt)
        self.assertIn("fetch-model", " ".join(self.stage("build")))

    def test_no_architecture_named(self):
        """One Dockerfile for linux/amd64 and linux/arm64: no instruction names an architecture
        or a package only one of them has (libquadmath0 exists on amd64 only), except where the
        build stage chooses between a native and a cross build by BUILDARCH and TARGETARCH."""
        arch = r"amd64|x86_64|x86-64|arm64|aarch64|quadmath"
        build = self.stage("build")
        for ins in self.instructions:
            if ins in build and "BUILDARCH" in ins:
                continue
            self.assertNotRegex(ins, arch, ins)
        self.assertIn("--platform linux/amd64,linux/arm64", self.text)
        # Native when the builder's architecture is the image's; an arm64 image on an x86-64
        # builder with the project's cross build; any other pair refused, not half-built.
        self.assertIn("ARG BUILDARCH", build)
        self.assertIn("ARG TARGETARCH", build)
        chooser = [i for i in build if i.startswith("RUN ") and "BUILDARCH" in i]
        self.assertEqual(len(chooser), 2, chooser)
        setup, compile_ = chooser
        self.assertIn('[ "$BUILDARCH" = "$TARGETARCH" ]', setup)
        self.assertIn('[ "$BUILDARCH/$TARGETARCH" = amd64/arm64 ]', setup)
        self.assertIn("scripts/setup.sh --no-test-tools --cross-aarch64", setup)
        self.assertIn("exit 1", setup)
        self.assertIn('[ "$BUILDARCH" = "$TARGETARCH" ]', compile_)
        self.assertIn("scripts/cross-aarch64 --target qwen", compile_)
        self.assertIn("build-aarch64/bin/qwen /out/usr/local/bin/qwen", compile_)
        # Beside the cross build's own names, only the two platforms' architecture names.
        rest = re.sub(r"(scripts/cross|--cross|build)-aarch64", "", " ".join(chooser))
        for a in re.findall(arch, rest):
            self.assertIn(a, ("amd64", "arm64"))

    def test_build_stage_runs_as_each_platform_pair_needs(self):
        """The build stage's two RUN steps, run by sh with stand-ins for the set-up script, the
        cross build, cmake and install (no Docker engine here): native on a builder of the
        image's architecture, the cross build for arm64 on amd64, refused otherwise."""
        build = self.stage("build")
        steps = [i[len("RUN "):] for i in build if i.startswith("RUN ") and "BUILDARCH" in i]
        self.assertEqual(len(steps), 2)
        cases = {
            ("amd64", "amd64"): ("setup.sh --no-test-tools\n", "cmake", "build/bin/qwen"),
            ("arm64", "arm64"): ("setup.sh --no-test-tools\n", "cmake", "build/bin/qwen"),
            ("amd64", "arm64"): ("setup.sh --no-test-tools --cross-aarch64\n",
                                 "cross-aarch64 --target qwen", "build-aarch64/bin/qwen"),
            ("arm64", "amd64"): (None, None, None),
        }
        for (build_arch, target_arch), (setup, compiler, program) in cases.items():
            with tempfile.TemporaryDirectory() as tmp:
                log = os.path.join(tmp, "log")
                os.makedirs(os.path.join(tmp, "scripts"))
                os.makedirs(os.path.join(tmp, "bin"))
                stub = f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n'
                for name in ("scripts/setup.sh", "scripts/cross-aarch64", "bin/cmake",
                             "bin/install"):
                    path = os.path.join(tmp, name)
                    with open(path, "w") as f:
                        f.write(stub)
                    os.chmod(path, 0o755)
                env = dict(os.environ, BUILDARCH=build_arch, TARGETARCH=target_arch,
                           PATH=os.path.join(tmp, "bin") + ":" + os.environ["PATH"])
                runs = []
                for step in steps:  # as a build does: the first failing step ends it
                    runs.append(subprocess.run(["/bin/sh", "-c", step], cwd=tmp, env=env,
                                               capture_output=True, text=True))
                    if runs[-1].returncode != 0:
                        break
                ran = open(log).read() if os.path.exists(log) else ""
                pair = f"{build_arch} -> {target_arch}"
                if setup is None:
                    self.assertNotEqual(runs[0].returncode, 0, pair)
                    self.assertIn(f"no cross build from {build_arch} to {target_arch}",
                                  runs[0].stderr)
                    self.assertEqual(ran, "", pair)
                    continue
                for r in runs:
                    self.assertEqual(r.returncode, 0, f"{pair}: {r.stderr}")
                lines = ran.splitlines(keepends=True)
                self.assertEqual(lines[0], setup, pair)
                self.assertTrue(any(line.startswith(compiler) for line in lines), (pair, ran))
                self.assertIn(f"install -D -m 0755 {program} /out/usr/local/bin/qwen", ran, pair)
                if compiler == "cmake":
                    self.assertNotIn("cross-aarch64", ran, pair)
                else:
                    self.assertNotIn("cmake", ran, pair)

    def runtime_packages(self):
        rt = " ".join(self.stage("runtime"))
        m = re.search(r"apt-get install -y --no-install-recommends (.*?)&&", rt)
        return set(m.group(1).split())

    def test_runtime_has_only_runtime_packages(self):
        pkgs = self.runtime_packages()
        self.assertFalse([p for p in pkgs if p.endswith("-dev")], pkgs)
        self.assertIn("curl", pkgs)  # fetch-model in the init container
        self.assertIn("ca-certificates", pkgs)

    @staticmethod
    def installed_with(packages):
        """`packages` and what apt installs with them (--no-install-recommends: Depends and
        Pre-Depends, recursively), from this machine's dpkg database: the build machine has
        installed every package the program links."""
        # Only this machine's own architecture: with the arm64 packages of the cross build
        # installed beside (scripts/setup.sh --cross-aarch64), a package name has two entries
        # whose dependencies differ (amd64's libavutil57 needs libmfx1, arm64's has none).
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
        q = subprocess.run(["dpkg-query", "-W", "-f",
                            "${Package}\t${Architecture}\t${Depends}, ${Pre-Depends}\n"],
                           capture_output=True, text=True, check=True)
        depends = {}
        for line in q.stdout.splitlines():
            pkg, pkg_arch, deps = line.split("\t", 2)
            if pkg_arch not in (arch, "all"):
                continue
            names = set()
            for dep in deps.split(","):
                # Alternatives ("a | b") count whichever is installed; versions and
                # architectures are dropped.
                for alt in dep.split("|"):
                    name = alt.strip().split(" ")[0].split(":")[0]
                    if name:
                        names.add(name)
            depends[pkg] = names
        seen, todo = set(), list(packages)
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            todo.extend(n for n in depends.get(p, ()) if n in depends)
        return seen

    @staticmethod
    def linked_libraries(program):
        """The shared libraries `program` loads, as paths. A program of this machine's
        architecture: ldd. One of another (the aarch64 cross build's, whose arm64 packages are
        installed beside the host's): its DT_NEEDED entries, and theirs, resolved in that
        architecture's multiarch directories, as the dynamic loader on such a machine would."""
        with open(program, "rb") as f:
            header = f.read(20)
        machine = int.from_bytes(header[18:20], "little")
        triplets = {62: "x86_64-linux-gnu", 183: "aarch64-linux-gnu"}
        host = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True,
                              text=True).stdout.strip() or "x86_64-linux-gnu"
        triplet = triplets.get(machine)
        if triplet is None or triplet == host:
            r = subprocess.run(["ldd", program], capture_output=True, text=True, check=True)
            return re.findall(r"=> (/\S+)", r.stdout)
        dirs = [f"/usr/lib/{triplet}", f"/lib/{triplet}"]
        found, todo = {}, [program]
        while todo:  # one readelf per level of the dependency tree (it takes many files)
            r = subprocess.run(["readelf", "-d"] + todo, capture_output=True, text=True,
                               check=True)
            todo = []
            for name in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout):
                if name in found or name.startswith("ld-linux"):
                    continue
                path = next((os.path.join(x, name) for x in dirs
                             if os.path.exists(os.path.join(x, name))), None)
                if path is None:
                    raise AssertionError(f"{program} needs {name}, not installed for {triplet}")
                found[name] = path
                todo.append(path)
        return list(found.values())

    def test_runtime_packages_cover_the_programs_libraries(self):
        """Every Debian package that provides a library `qwen` links is installed: listed, a
        dependency apt installs with a listed one (FFmpeg's libraries bring their codecs' and
        their own dependencies), or part of bookworm-slim. The aarch64 cross build runs this on
        its arm64 `qwen` too (label aarch64): the arm64 image's runtime stage, checked here."""
        base = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
        libs = self.linked_libraries(d.QWEN)
        self.assertTrue(libs)
        # Every candidate name of every library (usrmerge: /lib is /usr/lib), looked up in
        # dpkg's file lists in one pass (what `dpkg -S` reads, which takes minutes for the 200
        # libraries FFmpeg brings).
        candidates = {}
        for lib in libs:
            for cand in (lib, "/usr" + lib, lib.removeprefix("/usr"), os.path.realpath(lib)):
                candidates[cand] = lib
        owner = {}
        for listing in sorted(glob.glob("/var/lib/dpkg/info/*.list")):
            pkg = os.path.basename(listing)[:-len(".list")].split(":")[0]
            with open(listing, errors="replace") as f:
                for line in f:
                    lib = candidates.get(line.rstrip("\n"))
                    if lib is not None:
                        owner.setdefault(lib, pkg)
        for lib in libs:
            self.assertIn(lib, owner, f"no Debian package provides {lib}")
        # A sanitizer build (scripts/sanitize) links its runtime; the image is never built so.
        sanitizer_runtimes = {"libasan8", "libubsan1", "libtsan2", "liblsan0"}
        needed = set(owner.values()) - sanitizer_runtimes
        missing = needed - base - self.installed_with(self.runtime_packages())
        self.assertFalse(missing, f"the runtime stage lacks {sorted(missing)}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
