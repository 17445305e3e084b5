"""Client helper for mock_sysom.py: start it as a subprocess, steer it, read its request log.

Standard library only, so it can be imported by pytest and by shell-driven guest tests alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

MOCK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mock_sysom.py")


class MockSysom:
    """A running mock server. Use as a context manager or call stop()."""

    def __init__(self, access_key_id: str = "AKIDmocktest", access_key_secret: str = "mock-secret",
                 security_token: str | None = None, host: str = "127.0.0.1", python: str | None = None,
                 start_timeout: float = 10.0):
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.security_token = security_token
        self.host = host
        cmd = [python or sys.executable, MOCK_SCRIPT, "--host", host, "--port", "0",
               "--access-key-id", access_key_id, "--access-key-secret", access_key_secret]
        if security_token is not None:
            cmd += ["--security-token", security_token]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = self._read_port(start_timeout)
        self.url = f"http://{host}:{self.port}"

    def _read_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        # The first stdout line is MOCK_SYSOM_PORT=<port>; readline blocks, so bound it by polling.
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("MOCK_SYSOM_PORT="):
                return int(line.split("=", 1)[1])
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock_sysom exited rc={self.proc.returncode}: {self.proc.stderr.read()}")
        self.stop()
        raise RuntimeError("mock_sysom did not report its port in time")

    # -- control API --
    def _call(self, method: str, path: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"mock control {method} {path} -> {e.code}: {e.read().decode()}") from None

    def scenario(self, **patch) -> dict:
        """Merge keys into the scenario, e.g. scenario(faults={"ListClusters": [{"status": 500}]})."""
        return self._call("POST", "/__mock/scenario", patch)["scenario"]

    def reset(self) -> None:
        self._call("POST", "/__mock/reset", {})

    def state(self) -> dict:
        return self._call("GET", "/__mock/state")

    def requests(self, kind: str | None = "openapi", action: str | None = None) -> list[dict]:
        """Recorded requests, oldest first, optionally filtered by kind (openapi/sts/metadata) and action."""
        out = self._call("GET", "/__mock/requests")
        if kind is not None:
            out = [r for r in out if r["kind"] == kind]
        if action is not None:
            out = [r for r in out if r["action"] == action]
        return out

    def wait_for(self, predicate, timeout: float = 5.0, interval: float = 0.05):
        """Poll the request log until predicate(requests) is truthy; return its value or raise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.requests(kind=None))
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("mock request log never satisfied the condition")
            time.sleep(interval)

    # -- lifecycle --
    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_mock(**kwargs) -> MockSysom:
    return MockSysom(**kwargs)


if __name__ == "__main__":
    # Manual use: python3 control.py  -> starts a mock and prints its URL until Ctrl-C.
    with MockSysom() as m:
        print(m.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
