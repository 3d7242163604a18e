"""Starts and stops a real `lathe serve` for the server's Python tests (a real client against a
real server, as llama.cpp's tools/server/tests do).

LATHE_CLI is the lathe binary, LATHE_TEST_MODEL the model (both set by ctest)."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LATHE = os.environ.get("LATHE_CLI", os.path.join(ROOT, "build", "lathe"))
MODEL = os.environ.get("LATHE_TEST_MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LatheServer:
    """`with LatheServer("--parallel", "4") as server:` -> server.url, server.stop(), server.log()."""

    def __init__(self, *args, ready_timeout=120):
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout = ready_timeout
        self.proc = None
        self.stderr = tempfile.TemporaryFile(mode="w+b")

    def __enter__(self):
        cmd = [LATHE, "serve", "-m", MODEL, "--port", str(self.port), *self.args]
        if "-t" not in self.args:
            cmd += ["-t", "1"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.time() + self.ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lathe serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except Exception:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"lathe serve was not ready within {self.ready_timeout} s:\n{self.log()}")

    def __exit__(self, *exc):
        self.stop()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the server; returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def metrics(self):
        """The Prometheus text as {name{labels}: value}."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out


def run_generated(*args, timeout=300):
    """The text `lathe run ARGS --no-display-prompt` generated (run ends its output with a newline)."""
    out = run_cli("run", *args, "--no-display-prompt", timeout=timeout)
    assert out.endswith("\n")
    return out[:-1]


def run_cli(*args, timeout=300):
    """`lathe ARGS` -> stdout (raises with stderr on failure)."""
    r = subprocess.run([LATHE, *args], capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"lathe {' '.join(args)} failed ({r.returncode}):\n{r.stderr.decode()}")
    return r.stdout.decode("utf-8", "replace")
