"""The deployment files agree with each other and with the server (label unit).

Parses every YAML file under deploy/, validates the chart's values and every per-model values
file against values.schema.json, renders the chart and the helmfile with tests/deploy/helmrender
(Go text/template + Sprig, Helm's engine), and checks the rendered manifests against
`qwen serve --help` / `--check_config` (flag names and values), against each other (ports,
probes, Services) and against what the server writes (socket directory, TMPDIR on writable
volumes; model read-only; non-root user of the Dockerfile).
"""

import copy
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import unittest

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
    "auth": {"enabled": True, "secretName": "qwen-tokens"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "autoscaling": {"enabled": True},
    "logging": {"level": "info"},
    "server": {"limits": {"maxMessageBytes": 4194304, "maxConcurrentStreams": 100,
                          "maxTools": 64, "maxStopStrings": 16},
               "extraArgs": ["--max_retries=3"], "host": "::"},
    "podAnnotations": {"a": "b"},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
}

VARIANTS = {
    "defaults": [],
    "all-features": [ALL_FEATURES],
    "pvc": [{"model": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "qwen"}}}],
    "image": [{"model": {"source": "image"}}],
    "metrics-off": [{"metrics": {"enabled": False}}],
    "f32-big": [{"server": {"kvType": "f32", "ctxSize": 262144, "workers": 1, "slots": 1,
                            "threads": 8}}],
}


class YamlFilesTest(unittest.TestCase):
    def test_every_yaml_file_parses(self):
        files = [p for p in glob.glob(os.path.join(d.DEPLOY, "**", "*.y*ml"), recursive=True)
                 if "/templates/" not in p]
        self.assertGreaterEqual(len(files), 5, files)
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
        bad = {
            "zero workers": {"server": {"workers": 0}},
            "port out of range": {"server": {"port": 70000}},
            "port as text": {"server": {"port": "grpc"}},
            "unknown kv type": {"server": {"kvType": "q8_0"}},
            "tiny context": {"server": {"ctxSize": 1}},
            "auto threads": {"server": {"threads": 0}},
            "relative socket dir": {"server": {"socketDir": "run/qwen"}},
            "socket dir too long": {"server": {"socketDir": "/" + "a" * 80}},
            "argument that is not a flag": {"server": {"extraArgs": ["rm -rf /"]}},
            "unknown model source": {"model": {"source": "ftp"}},
            "short checksum": {"model": {"sha256": "abc"}},
            "upper-case checksum": {"model": {"sha256": "D" * 64}},
            "url without checksum": {"model": {"sha256": ""}},
            "url source without url": {"model": {"url": ""}},
            "pvc without claim": {"model": {"source": "pvc"}},
            "file with a directory": {"model": {"file": "../x.gguf"}},
            "not a gguf": {"model": {"file": "model.bin"}},
            "no weights size": {"model": {"memory": {"weightsBytes": 0}}},
            "root user": {"securityContext": {"runAsUser": 0}},
            "unknown key": {"server": {"wokers": 2}},
            "unknown top-level key": {"replicas": 3},
            "memory in words": {"resources": {"memory": "lots"}},
            "tls without secret": {"tls": {"enabled": True}},
            "auth without secret": {"auth": {"enabled": True}},
            "negative grace": {"server": {"gracePeriodSeconds": -1}},
            "log format": {"logging": {"format": "xml"}},
            "no replicas": {"replicaCount": 0},
            "hpa over 100%": {"autoscaling": {"targetCPUUtilizationPercentage": 150}},
            "service type": {"service": {"type": "ExternalName"}},
            "tmp size not in Mi": {"volumes": {"tmpSizeLimit": "1Gi"}},
        }
        for name, override in bad.items():
            with self.subTest(case=name):
                errors = list(self.validator.iter_errors(d.merge(self.defaults, override)))
                self.assertTrue(errors, f"{name}: accepted {override}")


class RenderTest(unittest.TestCase):
    """The chart renders for every variant and every model file, and the manifests agree."""

    @classmethod
    def setUpClass(cls):
        cls.defaults = d.chart_defaults()
        cls.known_flags = d.serve_help_flags()
        assert "check_config" in cls.known_flags, "qwen serve --help lists no --check_config"
        cls.rendered = {}
        cls.values = {}
        for name, overrides in VARIANTS.items():
            cls.rendered[name] = d.render_chart(values=overrides)
            v = cls.defaults
            for o in overrides:
                v = d.merge(v, o)
            cls.values[name] = v
        for p in d.model_values_files():
            rel, chart_values = d.helmfile_release(p)
            name = os.path.relpath(p, d.MODEL_VALUES_DIR)
            cls.rendered[name] = d.render_chart(values=[chart_values],
                                                release=rel["name"], namespace=rel["namespace"])
            cls.values[name] = d.merge(cls.defaults, chart_values)

    def each(self):
        for name in self.rendered:
            with self.subTest(variant=name):
                yield name, self.rendered[name], self.values[name]

    def test_kinds(self):
        for name, r, v in self.each():
            kinds = sorted(m["kind"] for _, m in r if isinstance(m, dict))
            want = ["Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"]
            if v["autoscaling"]["enabled"]:
                want.append("HorizontalPodAutoscaler")
            if v["metrics"]["enabled"] and v["metrics"]["serviceMonitor"]["enabled"]:
                want.append("ServiceMonitor")
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
            usable, pending = d.split_known(flags, self.known_flags)
            if pending:
                print(f"\n  {name}: not checked yet, added by other branches: "
                      + ", ".join(f"--{k} ({b})" for k, b in sorted(pending.items())),
                      file=sys.stderr)
            # As rendered: the model and /run/qwen are not on this machine (noted, not checked).
            code, out, err = d.check_config(usable)
            self.assertEqual(code, 0, f"{name}: {err}\n{out}")
            for k, val in usable.items():
                got = out["flags"][k]
                if k.endswith(("period", "timeout", "age", "age_grace")):
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
            # Probes: gRPC health on the server's port and service name, or TCP under TLS.
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c[probe]
                if v["tls"]["enabled"]:
                    self.assertEqual(p["tcpSocket"]["port"], "grpc")
                else:
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
            # The download: the init container writes the model volume and nothing else.
            inits = pod.get("initContainers", [])
            self.assertEqual(bool(inits), v["model"]["source"] == "url")
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
            if v["model"]["source"] == "url":
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

    def test_template_failures(self):
        cases = {
            "auth without probe exemption": {"auth": {"enabled": True, "secretName": "t",
                                                      "exemptProbes": False}},
            "metrics on the gRPC port": {"metrics": {"port": 50051}},
            "termination grace shorter than the drain": {
                "lifecycle": {"terminationGracePeriodSeconds": 30}},
            "hpa max below min": {"autoscaling": {"enabled": True, "minReplicas": 4,
                                                  "maxReplicas": 2}},
            "url source without checksum": {"model": {"sha256": ""}},
        }
        for name, values in cases.items():
            with self.subTest(case=name):
                with self.assertRaises(d.RenderError):
                    d.render_chart(values=[values])

    def test_notes_render(self):
        for name, r, v in self.each():
            notes = [m for src, m in r if src.endswith("NOTES.txt")]
            self.assertEqual(len(notes), 1)
            self.assertIn(f"grpcurl -plaintext localhost:{v['service']['port']}", notes[0])


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
                self.assertEqual(values, state["chartValues"])

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

    def test_docs_use_curl_fail(self):
        texts = []
        for p in (d.HELMFILE, os.path.join(d.ROOT, "README.md")):
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
        self.assertRegex(froms[0], r"^FROM debian:\$\{DEBIAN_RELEASE\} AS build$")
        self.assertRegex(froms[-1], r"^FROM debian:\$\{DEBIAN_RELEASE\}-slim AS runtime$")
        self.assertIn("ARG DEBIAN_RELEASE=bookworm", self.instructions)
        build = " ".join(self.stage("build"))
        self.assertIn("scripts/setup.sh", build, "the build stage uses the README's set-up script")

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

    def runtime_packages(self):
        rt = " ".join(self.stage("runtime"))
        m = re.search(r"apt-get install -y --no-install-recommends (.*?)&&", rt)
        return set(m.group(1).split())

    def test_runtime_has_only_runtime_packages(self):
        pkgs = self.runtime_packages()
        self.assertFalse([p for p in pkgs if p.endswith("-dev")], pkgs)
        self.assertIn("curl", pkgs)  # fetch-model in the init container
        self.assertIn("ca-certificates", pkgs)

    def test_runtime_packages_cover_the_programs_libraries(self):
        """Every Debian package that provides a library `qwen` links is installed (or is part
        of bookworm-slim)."""
        base = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
        r = subprocess.run(["ldd", d.QWEN], capture_output=True, text=True, check=True)
        libs = re.findall(r"=> (/\S+)", r.stdout)
        self.assertTrue(libs)
        # One dpkg query for every candidate name of every library (usrmerge: /lib is /usr/lib).
        candidates = {}
        for lib in libs:
            for cand in (lib, "/usr" + lib, os.path.realpath(lib)):
                candidates[cand] = lib
        q = subprocess.run(["dpkg", "-S"] + sorted(candidates), capture_output=True, text=True)
        owner = {}
        for line in q.stdout.splitlines():
            pkg, path = line.split(": ", 1)
            owner.setdefault(candidates[path.strip()], pkg.split(":")[0])
        for lib in libs:
            self.assertIn(lib, owner, f"no Debian package provides {lib}")
        # A sanitizer build (scripts/sanitize) links its runtime; the image is never built so.
        sanitizer_runtimes = {"libasan8", "libubsan1", "libtsan2", "liblsan0"}
        needed = set(owner.values()) - sanitizer_runtimes
        missing = needed - base - self.runtime_packages()
        self.assertFalse(missing, f"the runtime stage lacks {sorted(missing)}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
