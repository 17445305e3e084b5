#!/usr/bin/env python3
"""sysom-mcp benchmarks (issues 3 and 4). Standard library only; driven by bench/run.sh.

Every figure is measured in this one run, on loopback, and reported next to its baseline:
the mock SysOM's own round trip (issue 3) or bare-hyper, a minimal hyper 1 server answering a
fixed JSON body (issue 4). Nothing here asserts a timing: the script reports, it does not judge,
except for marking each target as met or missed in the table.

    bench.py --sysom target/release/sysom-mcp --bare target/bench/release/bare-hyper \
             --mock tests/mock_sysom/mock_sysom.py --out bench/results.md [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

AKID, SECRET = "AKIDbenchmark", "bench-secret-value"
MCP_PATH = "/mcp/unified"
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

PROCS: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def spawn(cmd, **kw) -> subprocess.Popen:
    p = subprocess.Popen(cmd, **kw)
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen, timeout: float = 5.0) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    if p in PROCS:
        PROCS.remove(p)


def stop_all(*_):
    for p in list(PROCS):
        try:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        except Exception:
            pass
    PROCS.clear()


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited rc={proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"port {port} did not open")


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Anonymous"):
                out["smaps_" + k] = int(v.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def cpu_secs(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mb(kib: float) -> float:
    return kib / 1024


def pct(values, p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


# --------------------------------------------------------------------------- servers


class Mock:
    def __init__(self, script: str, workdir: str):
        port_file = os.path.join(workdir, "mock.port")
        self.proc = spawn([sys.executable, script, "--host", "127.0.0.1", "--port", "0",
                           "--access-key-id", AKID, "--access-key-secret", SECRET, "--port-file", port_file],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "mock.log"), "w"))
        deadline = time.monotonic() + 10
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("mock did not start")
            time.sleep(0.02)
        self.port = int(open(port_file).read().strip())
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self, method: str, path: str, payload=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request(method, path, body=None if payload is None else json.dumps(payload),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = json.loads(r.read())
        c.close()
        return data

    def scenario(self, **patch):
        return self.control("POST", "/__mock/scenario", patch)

    def reset(self):
        self.control("POST", "/__mock/reset", {})

    def openapi_requests(self) -> list[dict]:
        return [r for r in self.control("GET", "/__mock/requests") if r["kind"] == "openapi"]


def sysom_env(mock: Mock | None, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SYSOM_", "OPENAPI_", "ACCESS_KEY", "RUST_LOG", "CREDENTIALS_DIRECTORY"))}
    env.update({"ACCESS_KEY_ID": AKID, "ACCESS_KEY_SECRET": SECRET})
    if mock is not None:
        env["SYSOM_ENDPOINT"] = mock.url
    env.update(extra or {})
    return env


def start_sysom_http(args, workdir, mock=None, extra_env=None, extra_args=(), binary=None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = sysom_env(mock, {"SYSOM_MCP_MAX_SESSIONS": "20000", "SYSOM_MCP_MAX_CONNECTIONS_PER_IP": "20000",
                           **(extra_env or {})})
    p = spawn([binary or args.sysom, "--sse", "--host", "127.0.0.1", "--port", str(port), "--log", "stderr", *extra_args],
              env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, f"sysom-{port}.log"), "w"))
    wait_port(port, p)
    return p, port


def start_bare(args, workdir, body_file=None, content_type=None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = spawn([args.bare, str(port)] + ([body_file] if body_file else []) + ([content_type] if content_type else []),
              stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, f"bare-{port}.log"), "w"))
    wait_port(port, p)
    return p, port


def post_json(conn: http.client.HTTPConnection, payload) -> tuple[int, bytes]:
    conn.request("POST", MCP_PATH, body=json.dumps(payload), headers=JSON_HEADERS)
    r = conn.getresponse()
    return r.status, r.read()


def decode_answer(raw: bytes) -> dict:
    """A JSON-RPC answer, whether it came as JSON or as one SSE `data:` line."""
    text = raw.decode()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip().startswith("{"):
            return json.loads(line[5:])
    raise ValueError(f"no JSON-RPC answer in {text[:200]!r}")


# --------------------------------------------------------------------------- MCP over stdio


class StdioSession:
    def __init__(self, args, mock: Mock, workdir: str):
        self.proc = spawn([args.sysom, "--stdio", "--log", "stderr"], env=sysom_env(mock),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=open(os.path.join(workdir, "sysom-stdio.log"), "w"), bufsize=0)
        self.next_id = 0
        init = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                           "clientInfo": {"name": "bench", "version": "0"}})
        assert "result" in init, init
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, msg: dict) -> None:
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    def write_request(self, method: str, params: dict) -> int:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def read_answer(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("sysom-mcp closed stdout")
            msg = json.loads(line)
            if "id" in msg and ("result" in msg or "error" in msg):
                return msg

    def request(self, method: str, params: dict) -> dict:
        rid = self.write_request(method, params)
        msg = self.read_answer()
        assert msg["id"] == rid, (msg, rid)
        return msg

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        stop(self.proc)


CALL = ("tools/call", {"name": "list_history_tasks", "arguments": {"days": 7}})


def check_call(msg: dict) -> None:
    res = msg.get("result") or {}
    sc = res.get("structuredContent") or {}
    if res.get("isError") or sc.get("code") not in ("Success", 200, "200"):
        raise RuntimeError(f"tool call failed: {json.dumps(msg)[:300]}")


def upstream_rtt(mock: Mock, n: int) -> list[float]:
    """The mock's own round trip for a GET on a keep-alive connection (an unsigned request: it
    sleeps the scenario latency, then fails the signature check - no MCP, no signing)."""
    c = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=30)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", "/api/v1/crashAgent/diagnosis/listDiagnosisTask?days=7")
        c.getresponse().read()
        out.append(time.perf_counter() - t)
    c.close()
    return out


def bench_overhead(args, mock: Mock, workdir: str, R: dict) -> None:
    n, latency = args.calls, args.latency_ms
    mock.reset()
    mock.scenario(latency_ms=latency)
    base = upstream_rtt(mock, min(n, 200))
    R["upstream_rtt_p50"], R["upstream_rtt_p99"] = statistics.median(base) * 1e3, pct(base, 99) * 1e3
    log(f"mock round trip at latency {latency} ms: p50 {R['upstream_rtt_p50']:.2f} ms")

    # stdio: one session, N sequential calls.
    mock.reset()
    mock.scenario(latency_ms=latency)
    s = StdioSession(args, mock, workdir)
    for _ in range(10):  # warm-up (first connection, allocator)
        check_call(s.request(*CALL))
    times = []
    cpu0 = cpu_secs(s.proc.pid)
    for _ in range(n):
        t = time.perf_counter()
        msg = s.request(*CALL)
        times.append(time.perf_counter() - t)
        check_call(msg)
    R["stdio_cpu_per_call"] = (cpu_secs(s.proc.pid) - cpu0) / n
    R["stdio_calls"] = times
    R["stdio_conns_overhead_run"] = len({r["client_port"] for r in mock.openapi_requests()})
    log(f"stdio: {n} calls, p50 {statistics.median(times) * 1e3:.2f} ms")

    # Connections opened for 1,000 calls (issue 3): sequential, then 16 in flight at a time.
    mock.reset()
    for _ in range(1000):
        check_call(s.request(*CALL))
    reqs = mock.openapi_requests()
    R["conns_seq"] = (len({r["client_port"] for r in reqs}), len(reqs))
    mock.reset()
    mock.scenario(latency_ms=latency)
    in_flight, sent, done, peak = 0, 0, 0, 0
    t0 = time.perf_counter()
    while done < 1000:
        while in_flight < 16 and sent < 1000:
            s.write_request(*CALL)
            sent += 1
            in_flight += 1
        peak = max(peak, in_flight)
        check_call(s.read_answer())
        in_flight -= 1
        done += 1
    R["conc_1000_secs"] = time.perf_counter() - t0
    reqs = mock.openapi_requests()
    R["conns_conc"] = (len({r["client_port"] for r in reqs}), len(reqs))
    log(f"connections for 1000 calls: sequential {R['conns_seq']}, 16 in flight {R['conns_conc']}")
    s.close()

    # HTTP: stateless POSTs (no session, no initialize) on one keep-alive connection.
    mock.reset()
    mock.scenario(latency_ms=latency)
    p, port = start_sysom_http(args, workdir, mock)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = {"jsonrpc": "2.0", "id": 1, "method": CALL[0], "params": CALL[1]}
    for _ in range(10):
        st, body = post_json(c, payload)
        assert st == 200, (st, body[:200])
        check_call(decode_answer(body))
    times = []
    cpu0 = cpu_secs(p.pid)
    for _ in range(n):
        t = time.perf_counter()
        st, body = post_json(c, payload)
        times.append(time.perf_counter() - t)
        assert st == 200, (st, body[:200])
        check_call(decode_answer(body))
    R["http_cpu_per_call"] = (cpu_secs(p.pid) - cpu0) / n
    c.close()
    R["http_calls"] = times
    R["http_conns"] = len({r["client_port"] for r in mock.openapi_requests()})
    log(f"http stateless: {n} calls, p50 {statistics.median(times) * 1e3:.2f} ms")
    stop(p)
    mock.reset()


# --------------------------------------------------------------------------- cold start, RSS


def first_answer(port: int, proc: subprocess.Popen, body: bytes, deadline: float) -> None:
    req = (f"POST {MCP_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
           f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    while time.perf_counter() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.connect()
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited rc={proc.returncode}")
            time.sleep(0.0002)
            continue
        c.sock.sendall(req)
        r = http.client.HTTPResponse(c.sock)
        r.begin()
        data = r.read()
        c.close()
        if r.status == 200 and b'"result"' in data:
            return
        raise RuntimeError(f"first answer was {r.status}: {data[:200]!r}")
    raise RuntimeError("no answer before the deadline")


def bench_cold_start(args, workdir, R) -> None:
    body = json.dumps(TOOLS_LIST).encode()
    env = sysom_env(None)
    for name in ("sysom", "bare"):
        times = []
        for _ in range(args.cold_runs):
            port = free_port()
            cmd = ([args.sysom, "--sse", "--host", "127.0.0.1", "--port", str(port), "--log", "stderr"]
                   if name == "sysom" else [args.bare, str(port)])
            t = time.perf_counter()
            p = spawn(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            first_answer(port, p, body, t + 10)
            times.append(time.perf_counter() - t)
            stop(p)
        R[f"cold_{name}"] = times
    # The floor: exec of a process that prints and exits (dynamic loading, runtime init).
    times = []
    for _ in range(args.cold_runs):
        t = time.perf_counter()
        subprocess.run([args.sysom, "--version"], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    R["cold_version"] = times
    log(f"cold start median: sysom {statistics.median(R['cold_sysom']) * 1e3:.1f} ms, "
        f"bare {statistics.median(R['cold_bare']) * 1e3:.1f} ms")


# A server "at rest" has answered one request and has built its upstream HTTPS client (deferred
# to 1 s after readiness, issue 16): idle RSS and the SSE curve's baseline are read after this.
AT_REST_SECS = 2.5


def at_rest(port: int, pid: int) -> dict:
    """RSS of a server after one POST and AT_REST_SECS, the baseline the memory curve returns to."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    post_json(c, TOOLS_LIST)
    c.close()
    time.sleep(AT_REST_SECS)
    return proc_status(pid)


def bench_idle_rss(args, workdir, R) -> bytes:
    p, port = start_sysom_http(args, workdir)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    st, tools_list = post_json(c, TOOLS_LIST)
    assert st == 200 and decode_answer(tools_list)["result"]["tools"], (st, tools_list[:200])
    c.close()
    time.sleep(AT_REST_SECS)
    R["idle_sysom"] = proc_status(p.pid)
    stop(p)
    body_file = os.path.join(workdir, "tools-list.json")
    with open(body_file, "wb") as f:
        f.write(tools_list)
    p, port = start_bare(args, workdir, body_file)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    st, data = post_json(c, TOOLS_LIST)
    assert st == 200 and data == tools_list
    c.close()
    time.sleep(AT_REST_SECS)
    R["idle_bare"] = proc_status(p.pid)
    stop(p)
    R["tools_list_bytes"] = len(tools_list)
    log(f"idle RSS: sysom {mb(R['idle_sysom']['VmRSS']):.1f} MiB, bare {mb(R['idle_bare']['VmRSS']):.1f} MiB")
    return body_file


# --------------------------------------------------------------------------- wrk


WRK_LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
"""
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}}


def to_ms(v: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(lua: str, port: int, conns: int, secs: int) -> dict:
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs}s", "--latency", "--timeout", "5s",
           "-s", lua, f"http://127.0.0.1:{port}{MCP_PATH}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "p50": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
           "p99": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
           "non2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0,
           "errors": sum(int(x) for x in m.groups()) if (m := re.search(
               r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0,
           "requests": int(re.search(r"(\d+) requests in", out).group(1))}
    return res


def bench_rps(args, workdir, R, body_file) -> None:
    if not shutil.which("wrk"):
        log("wrk not found: skipping requests/second (install it: apt-get install -y wrk)")
        return
    lua = os.path.join(workdir, "tools-list.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA % json.dumps(TOOLS_LIST))
    ping_lua = os.path.join(workdir, "ping.lua")
    with open(ping_lua, "w") as f:
        f.write(WRK_LUA % json.dumps(PING))
    for name, starter in (("sysom", lambda: start_sysom_http(args, workdir)),
                          ("bare", lambda: start_bare(args, workdir, body_file)),
                          ("bare_tiny", lambda: start_bare(args, workdir))):
        p, port = starter()
        wrk(lua, port, 8, 1)  # warm-up
        for conns in (1, 32):
            r = wrk(lua, port, conns, args.wrk_secs)
            R[f"rps_{name}_{conns}"] = r
            log(f"wrk {name} c{conns}: {r['rps']:.0f} req/s p50 {r['p50']:.3f} ms p99 {r['p99']:.3f} ms "
                f"non2xx {r['non2xx']} errors {r['errors']}")
        if name == "sysom":  # diagnostic: the per-request cost without the 21-tool list
            for conns in (1, 32):
                R[f"rps_sysomping_{conns}"] = r = wrk(ping_lua, port, conns, args.wrk_secs)
                log(f"wrk sysom ping c{conns}: {r['rps']:.0f} req/s")
        R[f"rps_{name}_rss"] = proc_status(p.pid)
        stop(p)


# --------------------------------------------------------------------------- in-session tools/list

# wrk script for requests inside a session: every request gets its own id ("<thread>-<n>").
WRK_SESSION_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
%s
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  local body = string.gsub('%s', '"__ID__"', '"' .. tostring(tid) .. '-' .. tostring(n) .. '"')
  return wrk.format(nil, nil, nil, body)
end
"""

MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"}}

# (name, protocol version, what it is): the two session-era flavours (SSE answers, with and
# without priming events) and the sessionless 2026-07-28 protocol (JSON answers).
SESSION_MODES = (("s1125", "2025-11-25", "in a 2025-11-25 session (SSE, priming event)"),
                 ("s0326", "2025-03-26", "in a 2025-03-26 session (SSE, no priming)"),
                 ("m0728", "2026-07-28", "2026-07-28, no session (JSON, per-request `_meta`)"))


def open_session(port: int, version: str) -> dict:
    """An initialized session (headers for its requests), or the 2026-07-28 request headers."""
    if version >= "2026-07-28":
        return {"MCP-Protocol-Version": version, "Mcp-Method": "tools/list"}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}
    c.request("POST", MCP_PATH, body=json.dumps(init), headers=JSON_HEADERS)
    r = c.getresponse()
    r.read()
    sid = r.getheader("mcp-session-id")
    assert r.status == 200 and sid, (r.status, sid)
    headers = {"Mcp-Session-Id": sid}
    if version >= "2025-06-18":  # clients send the header from 2025-06-18 on
        headers["MCP-Protocol-Version"] = version
    c.request("POST", MCP_PATH, body=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
              headers={**JSON_HEADERS, **headers})
    r = c.getresponse()
    r.read()
    assert r.status == 202, r.status
    c.close()
    return headers


def session_request(version: str, rid) -> dict:
    msg = {"jsonrpc": "2.0", "id": rid, "method": "tools/list", "params": {}}
    if version >= "2026-07-28":
        msg["params"]["_meta"] = MODERN_META
    return msg


def session_wrk_script(port: int, version: str, lua: str) -> tuple[str, bytes, str]:
    """Opens a session on `port` (or the 2026-07-28 headers), checks that one `tools/list` in
    it answers with the tools, and writes to `lua` a wrk script sending that request with unique
    ids. Returns the script's path, the answer's bytes and its content type."""
    headers = open_session(port, version)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", MCP_PATH, body=json.dumps(session_request(version, "x-1")),
              headers={**JSON_HEADERS, **headers})
    r = c.getresponse()
    body = r.read()
    c.close()
    got = decode_answer(body)
    assert r.status == 200 and got["id"] == "x-1" and got["result"]["tools"], (r.status, body[:300])
    with open(lua, "w") as f:
        f.write(WRK_SESSION_LUA % ("\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()),
                                   json.dumps(session_request(version, "__ID__"))))
    return lua, body, r.getheader("content-type")


def bench_session_rps(args, workdir, R) -> None:
    """tools/list in an initialized session (and in the 2026-07-28 protocol), against
    bare-hyper answering the very bytes of that answer, for this build and (--sysom-before)
    the one before it."""
    if not shutil.which("wrk"):
        return
    builds = [("sysom", args.sysom)] + ([("before", args.sysom_before)] if args.sysom_before else [])
    for mode, version, _ in SESSION_MODES:
        answer, ctype = None, None
        for name, binary in builds:
            p, port = start_sysom_http(args, workdir, binary=binary)
            lua, body, body_type = session_wrk_script(port, version, os.path.join(workdir, f"session-{mode}-{name}.lua"))
            if name == "sysom":
                answer, ctype = body, body_type
            wrk(lua, port, 8, 1)  # warm-up
            for conns in (1, 32):
                R[f"sess_{mode}_{name}_{conns}"] = r = wrk(lua, port, conns, args.wrk_secs)
                log(f"wrk {name} {mode} c{conns}: {r['rps']:.0f} req/s p50 {r['p50']:.3f} ms "
                    f"non2xx {r['non2xx']} errors {r['errors']}")
            stop(p)
        body_file = os.path.join(workdir, f"answer-{mode}")
        with open(body_file, "wb") as f:
            f.write(answer)
        p, port = start_bare(args, workdir, body_file, ctype)
        lua = os.path.join(workdir, "bare-session.lua")
        with open(lua, "w") as f:
            f.write(WRK_LUA % json.dumps(TOOLS_LIST))
        wrk(lua, port, 8, 1)
        for conns in (1, 32):
            R[f"sess_{mode}_bare_{conns}"] = wrk(lua, port, conns, args.wrk_secs)
        R[f"sess_{mode}_bytes"] = len(answer)
        stop(p)


# --------------------------------------------------------------------------- SSE sessions


class SseClient:
    """Opens N legacy SSE sessions with asyncio, keeps them open, counts what each received."""

    def __init__(self, port: int, path: str):
        self.port, self.path = port, path
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.streams: list[dict] = []

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    async def open_one(self, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 30)
            except Exception as e:
                return self.fail(f"connect: {type(e).__name__}: {e}"[:80])
            try:
                writer.write(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                             f"Accept: text/event-stream\r\n\r\n".encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                status = int(head.split(b" ", 2)[1])
                if status != 200:
                    writer.close()
                    return self.fail(f"HTTP {status}")
                buf = b""
                while not (b"event: endpoint" in buf and b"sessionId=" in buf and b"\n\n" in
                           buf[buf.index(b"event: endpoint"):]):
                    chunk = await asyncio.wait_for(reader.read(4096), 30)
                    if not chunk:
                        writer.close()
                        return self.fail("EOF before the endpoint event")
                    buf += chunk
            except Exception as e:
                writer.close()
                return self.fail(f"{type(e).__name__}: {e}"[:80])
            self.ok += 1
            self.streams.append({"reader": reader, "writer": writer, "bytes": 0, "eof": False})

    async def open(self, n: int, concurrency: int = 200) -> float:
        sem = asyncio.Semaphore(concurrency)
        t = time.perf_counter()
        await asyncio.gather(*(self.open_one(sem) for _ in range(n)))
        return time.perf_counter() - t

    async def drain(self, stream: dict, until: float) -> None:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                chunk = await asyncio.wait_for(stream["reader"].read(4096), left)
            except asyncio.TimeoutError:
                return
            except Exception:
                stream["eof"] = True
                return
            if not chunk:
                stream["eof"] = True
                return
            stream["bytes"] += len(chunk)

    async def hold(self, secs: float) -> tuple[int, int]:
        """Reads every stream for `secs`; returns (alive and got keep-alive data, closed)."""
        until = time.monotonic() + secs
        await asyncio.gather(*(self.drain(s, until) for s in self.streams))
        alive = sum(1 for s in self.streams if not s["eof"] and s["bytes"] > 0)
        closed = sum(1 for s in self.streams if s["eof"])
        return alive, closed

    def close(self) -> None:
        for s in self.streams:
            s["writer"].close()
        self.streams.clear()


async def sse_run(port: int, path: str, n: int, hold_secs: float, pid: int, probe_port: int | None):
    c = SseClient(port, path)
    open_secs = await c.open(n)
    await asyncio.sleep(0.5)
    st = proc_status(pid)
    alive, closed = await c.hold(hold_secs)
    probe = None
    if probe_port is not None:  # does the server still serve everyone else?
        def one():
            conn = http.client.HTTPConnection("127.0.0.1", probe_port, timeout=10)
            t = time.perf_counter()
            s, b = post_json(conn, TOOLS_LIST)
            conn.close()
            return s, time.perf_counter() - t, len(decode_answer(b)["result"]["tools"])
        probe = await asyncio.get_running_loop().run_in_executor(None, one)
        gauge = await asyncio.get_running_loop().run_in_executor(None, open_sessions_gauge, probe_port)
    else:
        gauge = None
    c.close()
    return {"ok": c.ok, "failures": c.failures, "open_secs": open_secs, "status": st,
            "alive_after_hold": alive, "closed_during_hold": closed, "probe": probe, "gauge": gauge}


def open_sessions_gauge(port: int) -> int | None:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
    except OSError:
        return None
    m = re.search(r'^sysom_mcp_open_sessions\{transport="sse"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def bench_sse(args, workdir, R) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.sse_many + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    R["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    extra = ["--sse-keep-alive", "1"]  # every stream must see keep-alive comments during the hold
    for n in (1000, args.sse_many):
        for name in ("sysom", "bare"):
            if name == "sysom":
                p, port = start_sysom_http(args, workdir, extra_args=extra)
                path = MCP_PATH
            else:
                p, port = start_bare(args, workdir)
                path = "/sse"
            before = at_rest(port, p.pid)
            if name == "bare":  # bare-hyper sends nothing after its first event: hold = just stay open
                r = asyncio.run(sse_run(port, path, n, 0.01, p.pid, None))
                r["alive_after_hold"] = r["ok"] - r["closed_during_hold"]
            else:
                r = asyncio.run(sse_run(port, path, n, args.sse_hold, p.pid, port))
            # A closed stream is noticed at its next keep-alive write (every 1 s): RSS is sampled
            # 0.5, 2.5 and 5 s after the client closed them (the memory curve after close).
            r["curve"] = []
            t0 = time.monotonic()
            for at in (0.5, 2.5, 5.0):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                r["curve"].append((at, proc_status(p.pid)["VmRSS"]))
                if at == 2.5:
                    r["after_close"] = proc_status(p.pid)
            if name == "sysom":
                r["gauge_after_close"] = open_sessions_gauge(port)
            r["before"] = before
            R[f"sse_{name}_{n}"] = r
            log(f"SSE {name} x{n}: ok {r['ok']} failures {r['failures']} alive {r['alive_after_hold']} "
                f"RSS {mb(r['status']['VmRSS']):.1f} MiB, open in {r['open_secs']:.1f} s, probe {r['probe']}")
            stop(p)


# --------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "–"


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def cold_and_idle_rows(args, R, L, cold_target, idle_target) -> None:
    """The table head, then the cold-start and idle-RSS rows, each marked against its (label, test)."""
    L.append("| figure | sysom-mcp | bare-hyper | ratio | target | |")
    L.append("|---|---|---|---|---|---|")
    cs, cb = statistics.median(R["cold_sysom"]) * 1e3, statistics.median(R["cold_bare"]) * 1e3
    L.append(f"| cold start → first `tools/list` answer, median of {args.cold_runs} | {cs:.1f} ms | {cb:.1f} ms | "
             f"{ratio(cs, cb)} | {cold_target[0]} | {mark(cold_target[1](cs, cb))} |")
    i_s, i_b = R["idle_sysom"], R["idle_bare"]
    L.append(f"| idle RSS after start + one `tools/list` | {mb(i_s['VmRSS']):.1f} MiB | {mb(i_b['VmRSS']):.1f} MiB | "
             f"{ratio(i_s['VmRSS'], i_b['VmRSS'])} | {idle_target[0]} | {mark(idle_target[1](i_s['VmRSS']))} |")


def report(args, R) -> str:
    L = []
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short",
                             "HEAD"], capture_output=True, text=True).stdout.strip()
    L.append("# sysom-mcp benchmark results\n")
    L.append(f"One run of `bench/run.sh` on {time.strftime('%Y-%m-%d %H:%M %Z')}: commit `{commit}`, "
             f"{os.cpu_count()} × {cpu}, Linux {platform.release()}, loopback only, release builds. "
             f"Load generator and servers share the same {os.cpu_count()} cores. Baselines: the mock SysOM's own "
             f"round trip (issue 3) and `bench/bare-hyper` (tokio + hyper 1, fixed body; issue 4), "
             f"measured in the same run. Timings are wall-clock from the Python driver.\n")

    # Issue 3
    L.append("## Issue 3: tool-call overhead above the upstream, and upstream connections\n")
    L.append(f"`list_history_tasks` (one signed upstream GET, `ListVmcoreDiagnosisTask`), mock latency "
             f"{args.latency_ms} ms, {args.calls} sequential calls after 10 warm-up calls. "
             f"Upstream round trip = the mock's own answer time for a GET on a keep-alive connection, "
             f"measured directly (p50 {R['upstream_rtt_p50']:.2f} ms, p99 {R['upstream_rtt_p99']:.2f} ms).\n")
    L.append("| transport | call p50 | call p99 | overhead p50 (call − RTT p50) | overhead p99 | "
             f"overhead p50 (call − {args.latency_ms} ms) | call p50 / upstream RTT p50 |")
    L.append("|---|---|---|---|---|---|---|")
    for key, label in (("stdio_calls", "stdio, one session"), ("http_calls", "HTTP stateless POST, keep-alive")):
        t = [x * 1e3 for x in R[key]]
        p50, p99 = statistics.median(t), pct(t, 99)
        L.append(f"| {label} | {p50:.2f} ms | {p99:.2f} ms | {p50 - R['upstream_rtt_p50']:.2f} ms | "
                 f"{p99 - R['upstream_rtt_p50']:.2f} ms | {p50 - args.latency_ms:.2f} ms | "
                 f"{p50 / R['upstream_rtt_p50']:.3f} |")
    L.append("")
    L.append("| upstream TCP connections (distinct client ports seen by the mock) | connections | upstream requests |")
    L.append("|---|---|---|")
    L.append(f"| 1,000 sequential calls, one stdio session, latency 0 | {R['conns_seq'][0]} | {R['conns_seq'][1]} |")
    L.append(f"| 1,000 calls, 16 in flight, latency {args.latency_ms} ms "
             f"({R['conc_1000_secs']:.1f} s) | {R['conns_conc'][0]} | {R['conns_conc'][1]} |")
    L.append(f"| the {args.calls + 10} timed stdio calls above | {R['stdio_conns_overhead_run']} | "
             f"{args.calls + 10} |")
    L.append(f"| the {args.calls + 10} timed HTTP calls above | {R['http_conns']} | {args.calls + 10} |")
    L.append("")
    L.append(f"Server CPU per call (user + system time of the sysom-mcp process over the {args.calls} timed calls / "
             f"{args.calls}): stdio {R['stdio_cpu_per_call'] * 1e3:.2f} ms, HTTP {R['http_cpu_per_call'] * 1e3:.2f} ms.\n")

    # Issue 16
    L.append("## Issue 16: in-session tool lists, lighter SSE sessions, a smaller idle footprint\n")
    cold_and_idle_rows(args, R, L, ("≤ 3×", lambda cs, cb: cs <= 3 * cb), ("≤ 8 MiB", lambda kib: kib <= 8 * 1024))
    n = args.sse_many
    sm, bm = R[f"sse_sysom_{n}"], R[f"sse_bare_{n}"]
    per_s = (sm["status"]["VmRSS"] - sm["before"]["VmRSS"]) / max(1, sm["ok"])
    per_b = (bm["status"]["VmRSS"] - bm["before"]["VmRSS"]) / max(1, bm["ok"])
    L.append(f"| memory per idle open legacy SSE session ({n:,} held) | {per_s:.1f} KiB | {per_b:.1f} KiB | "
             f"{ratio(per_s, per_b)} | ≤ 8 KiB | {mark(per_s <= 8)} |")
    last_s, last_b = sm["curve"][-1], bm["curve"][-1]
    L.append(f"| RSS {last_s[0]:.0f} s after the {n:,} sessions closed / before they opened | "
             f"{mb(last_s[1]):.1f} / {mb(sm['before']['VmRSS']):.1f} MiB | {mb(last_b[1]):.1f} / "
             f"{mb(bm['before']['VmRSS']):.1f} MiB | {last_s[1] / sm['before']['VmRSS']:.2f} (sysom-mcp) | "
             f"≤ 1.2 | {mark(last_s[1] <= 1.2 * sm['before']['VmRSS'])} |")
    for label, key in (("stdio", "stdio_calls"), ("HTTP", "http_calls")):
        t = [x * 1e3 for x in R[key]]
        over = pct(t, 99) - R["upstream_rtt_p99"]
        L.append(f"| tool-call overhead p99 ({label}, c=1): call p99 − upstream RTT p99 | {over:.2f} ms | | | "
                 f"< 1 ms | {mark(over < 1)} |")
    for mode, _, what in SESSION_MODES:
        for conns in (1, 32):
            k = f"sess_{mode}_sysom_{conns}"
            if k not in R:
                continue
            s_, b_ = R[k], R[f"sess_{mode}_bare_{conns}"]
            L.append(f"| `tools/list` req/s {what}, c={conns} | {s_['rps']:.0f} | {b_['rps']:.0f} | "
                     f"{ratio(s_['rps'], b_['rps'])} | ≥ 0.5× | {mark(s_['rps'] >= 0.5 * b_['rps'])} |")
    L.append("")
    if any(k.startswith("sess_") and "_before_" in k for k in R):
        L.append("The in-session runs against the build before these changes (`--sysom-before`), same run:\n")
        L.append("| `tools/list` | before: req/s (ratio to bare-hyper) | now: req/s (ratio) |")
        L.append("|---|---|---|")
        for mode, _, what in SESSION_MODES:
            for conns in (1, 32):
                k = f"sess_{mode}_before_{conns}"
                if k not in R:
                    continue
                b_, o_, n_ = R[f"sess_{mode}_bare_{conns}"], R[k], R[f"sess_{mode}_sysom_{conns}"]
                L.append(f"| {what}, c={conns} | {o_['rps']:.0f} ({ratio(o_['rps'], b_['rps'])}) | "
                         f"{n_['rps']:.0f} ({ratio(n_['rps'], b_['rps'])}) |")
        L.append("")
    L.append("- In-session runs: one session per server, opened with `initialize` and "
             "`notifications/initialized`; every request carries `Mcp-Session-Id` (and `MCP-Protocol-Version` "
             "from 2025-06-18 on) and its own id; HTTP/1.1 keep-alive. bare-hyper answers the very bytes (and "
             "content type) sysom-mcp sent for that mode: " + ", ".join(
                 f"{mode} {R[f'sess_{mode}_bytes']:,} bytes" for mode, _, _ in SESSION_MODES
                 if f"sess_{mode}_bytes" in R) + ". Non-2xx / socket errors: " + ", ".join(
                 f"{k[5:]} {R[k]['non2xx']}/{R[k]['errors']}" for k in sorted(R)
                 if k.startswith("sess_") and not k.endswith("_bytes")) + ".")
    for name, key in (("sysom-mcp", "sysom"), ("bare-hyper", "bare")):
        r = R[f"sse_{key}_{n}"]
        L.append(f"- Memory curve, {name}, {n:,} legacy SSE sessions: {r['before']['VmRSS']} KiB before, "
                 f"{r['status']['VmRSS']} KiB held (RssAnon {r['status']['RssAnon']}), then "
                 + ", ".join(f"{kib} KiB {at:g} s after close" for at, kib in r["curve"]) + ".")
    L.append("")

    # Issue 4
    L.append("## Issue 4: the HTTP server against bare hyper\n")
    cold_and_idle_rows(args, R, L, ("< 30 ms", lambda cs, cb: cs < 30), ("< 12 MB", lambda kib: kib * 1024 < 12e6))
    i_s, i_b = R["idle_sysom"], R["idle_bare"]
    s1, b1 = R["sse_sysom_1000"], R["sse_bare_1000"]
    L.append(f"| RSS with 1,000 open legacy SSE sessions | {mb(s1['status']['VmRSS']):.1f} MiB | "
             f"{mb(b1['status']['VmRSS']):.1f} MiB | {ratio(s1['status']['VmRSS'], b1['status']['VmRSS'])} | "
             f"< 60 MB | {mark(s1['status']['VmRSS'] * 1024 < 60e6 and s1['ok'] == 1000)} |")
    for conns in (1, 32):
        if f"rps_sysom_{conns}" not in R:
            continue
        s, b = R[f"rps_sysom_{conns}"], R[f"rps_bare_{conns}"]
        L.append(f"| `tools/list` req/s, concurrency {conns} | {s['rps']:.0f} | {b['rps']:.0f} | "
                 f"{ratio(s['rps'], b['rps'])} | ≥ 0.5× | {mark(s['rps'] >= 0.5 * b['rps'])} |")
        L.append(f"| … latency p50 / p99, concurrency {conns} | {s['p50']:.3f} / {s['p99']:.3f} ms | "
                 f"{b['p50']:.3f} / {b['p99']:.3f} ms | {ratio(s['p50'], b['p50'])} / {ratio(s['p99'], b['p99'])} | | |")
    n = args.sse_many
    sm, bm = R[f"sse_sysom_{n}"], R[f"sse_bare_{n}"]
    held = sm["ok"] == n and not sm["failures"] and sm["alive_after_hold"] == n
    L.append(f"| {n:,} concurrent SSE sessions: opened / failed / alive after {args.sse_hold:.0f} s | "
             f"{sm['ok']} / {sum(sm['failures'].values())} / {sm['alive_after_hold']} | "
             f"{bm['ok']} / {sum(bm['failures'].values())} / {bm['alive_after_hold']} | | all held | {mark(held)} |")
    L.append(f"| … RSS with {n:,} sessions | {mb(sm['status']['VmRSS']):.1f} MiB | {mb(bm['status']['VmRSS']):.1f} MiB | "
             f"{ratio(sm['status']['VmRSS'], bm['status']['VmRSS'])} | | |")
    L.append("")

    # Details
    L.append("### Details\n")
    L.append(f"- Cold start: medians include the driver's `exec` and connect polling (every 0.2 ms); "
             f"`sysom-mcp --version` (exec → exit) takes {statistics.median(R['cold_version']) * 1e3:.1f} ms. "
             f"sysom-mcp min/max {min(R['cold_sysom']) * 1e3:.1f}/{max(R['cold_sysom']) * 1e3:.1f} ms, "
             f"bare-hyper {min(R['cold_bare']) * 1e3:.1f}/{max(R['cold_bare']) * 1e3:.1f} ms.")
    for name, st in (("sysom-mcp", i_s), ("bare-hyper", i_b)):
        L.append(f"- Idle {name}: VmRSS {st['VmRSS']} KiB (RssAnon {st['RssAnon']}, RssFile {st['RssFile']}), "
                 f"Pss {st['smaps_Pss']} KiB, Private_Dirty {st['smaps_Private_Dirty']}, Private_Clean "
                 f"{st['smaps_Private_Clean']}, Shared_Clean {st['smaps_Shared_Clean']} KiB; {st['Threads']} threads.")
    for name, key in (("sysom-mcp", "sysom"), ("bare-hyper", "bare")):
        for n_ in (1000, n):
            r = R[f"sse_{key}_{n_}"]
            per = (r["status"]["VmRSS"] - r["before"]["VmRSS"]) / max(1, r["ok"])
            L.append(f"- {name}, {n_:,} SSE sessions: opened in {r['open_secs']:.1f} s (200 connects in flight), "
                     f"failures {r['failures'] or 'none'}, RSS {r['before']['VmRSS']} → {r['status']['VmRSS']} KiB "
                     f"(≈ {per:.1f} KiB per session; RssAnon {r['status']['RssAnon']} KiB, "
                     f"{r['status']['Threads']} threads, {r['status']['fds']} fds), "
                     f"{r['after_close']['VmRSS']} KiB 2.5 s after the client closed them all"
                     + (f"; server's open-session gauge {r['gauge']} while held, {r['gauge_after_close']} after"
                        if key == "sysom" else "")
                     + (f"; a `tools/list` POST during the hold answered {r['probe'][0]} in "
                        f"{r['probe'][1] * 1e3:.1f} ms" if r.get("probe") else "") + ".")
    if "rps_sysom_1" in R:
        L.append(f"- Requests/second: `wrk` for {args.wrk_secs} s per figure (1 thread at concurrency 1, 2 threads at "
                 f"32), POST `tools/list` without a session (stateless). bare-hyper answered the same "
                 f"{R['tools_list_bytes']:,}-byte body that sysom-mcp sends; with a 36-byte body it did "
                 f"{R['rps_bare_tiny_1']['rps']:.0f} req/s at concurrency 1 and {R['rps_bare_tiny_32']['rps']:.0f} at 32. "
                 f"Non-2xx / socket errors: " + ", ".join(
                     f"{k[4:]} {R[k]['non2xx']}/{R[k]['errors']}" for k in sorted(R)
                     if k.startswith("rps_") and not k.endswith("_rss")) + ".")
        L.append(f"- Same server, stateless `ping` instead of `tools/list` (diagnostic: the fixed per-request "
                 f"cost): {R['rps_sysomping_1']['rps']:.0f} req/s at concurrency 1, "
                 f"{R['rps_sysomping_32']['rps']:.0f} at 32 (p50 {R['rps_sysomping_32']['p50']:.3f} ms).")
        L.append(f"- RSS after the wrk runs: sysom-mcp {R['rps_sysom_rss']['VmRSS']} KiB "
                 f"(peak {R['rps_sysom_rss']['VmHWM']}), bare-hyper {R['rps_bare_rss']['VmRSS']} KiB.")
    L.append(f"- File descriptor limit for the run: {R['nofile']}; server limits raised with "
             f"`SYSOM_MCP_MAX_SESSIONS=20000`, `SYSOM_MCP_MAX_CONNECTIONS_PER_IP=20000`; "
             f"SSE keep-alive 1 s during the session tests, so \"alive\" means the stream stayed open "
             f"and kept delivering keep-alive comments for {args.sse_hold:.0f} s.")
    L.append("")
    L.append("Rerun: `bench/run.sh` (writes this file, keeping the dated `###` subsections under issues 3 and 16). "
             "Quick smoke run: `bench/run.sh --quick`.")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sysom", required=True)
    ap.add_argument("--bare", required=True)
    ap.add_argument("--mock", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    ap.add_argument("--budget-secs", type=int, default=780, help="hard stop for the whole run")
    ap.add_argument("--sysom-before", help="an older sysom-mcp build, measured in the in-session runs too")
    args = ap.parse_args()
    args.calls = 30 if args.quick else 300
    args.latency_ms = 20
    args.cold_runs = 5 if args.quick else 20
    args.wrk_secs = 2 if args.quick else 5
    args.sse_many = 2000 if args.quick else 10000
    args.sse_hold = 3.0 if args.quick else 5.0

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(args.budget_secs)
    R: dict = {}
    try:
        with open(args.out) as f:
            args.out_previous = f.read()
    except FileNotFoundError:
        args.out_previous = ""
    workdir = tempfile.mkdtemp(prefix="sysom-bench-")
    try:
        mock = Mock(args.mock, workdir)
        bench_overhead(args, mock, workdir, R)
        stop(mock.proc)
        bench_cold_start(args, workdir, R)
        body_file = bench_idle_rss(args, workdir, R)
        bench_rps(args, workdir, R, body_file)
        bench_session_rps(args, workdir, R)
        bench_sse(args, workdir, R)
        text = report(args, R)
    finally:
        stop_all()
    with open(args.out, "w") as f:
        f.write(with_kept_subsections(text, args.out_previous))
    print(text)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def with_kept_subsections(text: str, previous: str) -> str:
    """The new report, with the `### ` subsections that followed the generated part of each
    `## ` section of the previous file (dated A/B runs written by hand) kept after that
    section's new tables. The last section's own `### Details` is generated, so it has none."""
    def sections(t: str) -> tuple[str, dict[str, str]]:
        head, *parts = re.split(r"(?m)^(?=## )", t)
        return head, {p.split("\n", 1)[0]: p for p in parts}
    head, new = sections(text)
    _, old = sections(previous)
    last = list(new)[-1] if new else None
    out = [head]
    for title, body in new.items():
        kept = ""
        m = re.search(r"(?m)^### ", old.get(title, ""))
        if m and title != last:
            kept = old[title][m.start():]
        out.append(body.rstrip("\n") + "\n\n" + kept if kept else body)
    return "".join(out)


if __name__ == "__main__":
    sys.exit(main())
