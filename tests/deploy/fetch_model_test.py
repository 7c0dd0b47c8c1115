"""scripts/fetch-model against a local HTTP server on 127.0.0.1 (label e2e): a good download,
a checksum mismatch, resuming, a missing checksum, an existing wrong file, a 404, a GGUF of
another architecture, two runs on one directory (a node's cache), waiting for another's
download (a cluster's cache)."""

import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deploy_lib as d  # noqa: E402

SCRIPT = os.path.join(d.ROOT, "scripts", "fetch-model")
FILES = {
    "/tiny.gguf": d.TINY_MODEL,
    "/other-arch.gguf": os.path.join(d.ROOT, "tests", "data", "models",
                                     "mmproj-tiny-qwen35-f16.gguf"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves FILES with byte ranges (as Hugging Face's CDN does) and records each request."""
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.requests.append((self.path, self.headers.get("Range")))
        path = self.path
        if path.startswith("/slow/"):  # a download that takes a while
            time.sleep(2)
            path = path[len("/slow"):]
        src = FILES.get(path)
        if src is None:
            self.send_error(404)
            return
        with open(src, "rb") as f:
            data = f.read()
        start = 0
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start:])


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class FetchModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.base = f"http://127.0.0.1:{cls.server.server_address[1]}"
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.tiny_sha = sha256(d.TINY_MODEL)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def setUp(self):
        Handler.requests = []
        self.out = tempfile.mkdtemp(prefix="fetch-model-test-")
        self.env = dict(os.environ, QWEN_BIN_DIR=d.BIN_DIR, PATH=d.BIN_DIR + ":" + os.environ["PATH"],
                        no_proxy="*", NO_PROXY="*")
        for k in ("http_proxy", "HTTP_PROXY", "HF_TOKEN", "QWEN_MODEL_URL", "QWEN_MODEL_SHA256"):
            self.env.pop(k, None)

    def tearDown(self):
        shutil.rmtree(self.out, ignore_errors=True)

    def fetch(self, *args):
        return subprocess.run([SCRIPT, "--out", self.out, *args], capture_output=True, text=True,
                              env=self.env, timeout=120)

    def test_download_checks_and_prints_the_path(self):
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha)
        self.assertEqual(r.returncode, 0, r.stderr)
        path = r.stdout.strip().splitlines()[-1]
        self.assertEqual(path, os.path.join(self.out, "tiny.gguf"))
        self.assertEqual(sha256(path), self.tiny_sha)
        self.assertFalse(os.path.exists(path + ".part"))
        self.assertIn("check_config", r.stderr)  # the architecture was checked
        # A second run finds the file, checks it and downloads nothing.
        Handler.requests = []
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(Handler.requests, [])

    def test_refuses_a_checksum_mismatch(self):
        wrong = "0" * 64
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", wrong)
        self.assertEqual(r.returncode, 1)
        self.assertIn("checksum mismatch", r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(os.listdir(self.out), [], "neither the file nor the partial file stays")

    def test_resumes_a_partial_download(self):
        with open(d.TINY_MODEL, "rb") as f:
            head = f.read(1_000_000)
        with open(os.path.join(self.out, "tiny.gguf.part"), "wb") as f:
            f.write(head)
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(("/tiny.gguf", "bytes=1000000-"), Handler.requests)
        self.assertEqual(sha256(os.path.join(self.out, "tiny.gguf")), self.tiny_sha)

    def test_a_corrupt_partial_download_is_refused_then_starts_over(self):
        size = os.path.getsize(d.TINY_MODEL)
        with open(os.path.join(self.out, "tiny.gguf.part"), "wb") as f:
            f.write(b"\xff" * 4096)
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha,
                       "--size", str(size))
        self.assertEqual(r.returncode, 1)
        self.assertIn("checksum mismatch", r.stderr)
        self.assertEqual(os.listdir(self.out), [])
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_needs_a_checksum(self):
        r = self.fetch("--url", self.base + "/tiny.gguf")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--sha256", r.stderr)
        self.assertEqual(Handler.requests, [], "nothing is downloaded without a checksum")
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", "xyz")
        self.assertEqual(r.returncode, 2)

    def test_never_overwrites_a_wrong_file(self):
        target = os.path.join(self.out, "tiny.gguf")
        with open(target, "wb") as f:
            f.write(b"not the model")
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha)
        self.assertEqual(r.returncode, 1)
        self.assertIn("refusing", r.stderr)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"not the model")
        self.assertEqual(Handler.requests, [])

    def test_http_error_fails(self):
        r = self.fetch("--url", self.base + "/missing.gguf", "--sha256", self.tiny_sha)
        self.assertEqual(r.returncode, 1)
        self.assertFalse(os.path.exists(os.path.join(self.out, "missing.gguf")))

    def test_refuses_another_architecture(self):
        src = FILES["/other-arch.gguf"]
        r = self.fetch("--url", self.base + "/other-arch.gguf", "--sha256", sha256(src))
        self.assertEqual(r.returncode, 1)
        self.assertIn("qwen35", r.stderr)
        r = self.fetch("--url", self.base + "/other-arch.gguf", "--sha256", sha256(src),
                       "--no-check")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_two_runs_on_one_directory_take_turns(self):
        """Pods on one node share its cache: the second waits for the first's download, then
        finds the file and only checks it (one download, no clobbered partial file)."""
        url = self.base + "/slow/tiny.gguf"
        cmd = [SCRIPT, "--out", self.out, "--url", url, "--sha256", self.tiny_sha,
               "--file", "tiny.gguf", "--no-check"]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=self.env)
        deadline = time.time() + 30
        while not Handler.requests and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=120)
        out, err = first.communicate(timeout=120)
        self.assertEqual(first.returncode, 0, err)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn("waiting for it", second.stderr)
        self.assertEqual(Handler.requests, [("/slow/tiny.gguf", None)])
        self.assertEqual(sha256(os.path.join(self.out, "tiny.gguf")), self.tiny_sha)
        self.assertEqual(os.listdir(self.out), ["tiny.gguf"], "no lock or partial file is left")

    def test_wait_for_another_download(self):
        size = str(os.path.getsize(d.TINY_MODEL))
        args = ["--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha, "--size", size]
        # Nothing appears: it gives up after its budget, naming the file; nothing is fetched.
        start = time.time()
        r = self.fetch(*args, "--wait", "2")
        self.assertEqual(r.returncode, 1)
        self.assertGreaterEqual(time.time() - start, 2)
        self.assertIn("did not appear within 2s", r.stderr)
        self.assertEqual(Handler.requests, [])
        # The file appears (under its final name, as a finished download puts it): ready.
        target = os.path.join(self.out, "tiny.gguf")

        def finish_download():
            shutil.copy(d.TINY_MODEL, target + ".part")
            os.replace(target + ".part", target)
        threading.Timer(1, finish_download).start()
        r = self.fetch(*args, "--wait", "60")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), target)
        self.assertEqual(Handler.requests, [])
        # A file of the wrong size is refused.
        r = self.fetch("--url", self.base + "/tiny.gguf", "--sha256", self.tiny_sha,
                       "--size", "12", "--wait", "5")
        self.assertEqual(r.returncode, 1)
        self.assertIn("expected 12", r.stderr)

    def test_known_files_are_pinned(self):
        for quant in ("q3_k_m", "q4_k_m", "q8_0"):
            r = self.fetch("--quant", quant, "--dry-run")
            self.assertEqual(r.returncode, 0, r.stderr)
            info = dict(line.split(" ", 1) for line in r.stdout.splitlines())
            self.assertRegex(info["url"], r"^https://huggingface\.co/unsloth/Qwen3\.5-4B-GGUF/"
                                          r"resolve/[0-9a-f]{40}/Qwen3\.5-4B-")
            self.assertRegex(info["sha256"], r"^[0-9a-f]{64}$")
        r = self.fetch("--dry-run")
        self.assertIn("Qwen3.5-4B-Q3_K_M.gguf", r.stdout)
        self.assertIn("d6981ab4d77ba712b48ef69d69042d75b5e39b9dce5fb5a5b054fd08e06afb95", r.stdout)
        r = self.fetch("--quant", "q4_k_m", "--sha256", "1" * 64, "--dry-run")
        self.assertEqual(r.returncode, 2, "a checksum that contradicts the pinned one is refused")


if __name__ == "__main__":
    unittest.main(verbosity=2)
