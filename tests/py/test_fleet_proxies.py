"""A fleet: the shipped nginx and HAProxy examples (packaging/examples/nginx-fleet.conf,
haproxy.cfg), run by the real Debian binaries in front of three sysom-mcp instances on loopback
that share a task key, driven by the real Python ``mcp`` clients: Streamable HTTP sessions and
legacy HTTP+SSE stay on their instance (legacy SSE by the route id in its sessionId, so its
streams spread while their POSTs follow them), stateless requests spread over all, an instance killed
mid-diagnosis costs a session client its call (it reconnects and gets a result), while an MCP
task created on the killed instance completes through the others with one upstream task.

The only changes to the shipped files are the ports (and, for nginx, the wrapping nginx.conf a
Debian install provides). Skips, saying why, only when nginx or haproxy is not installed
(.ci/run installs both).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import anyio
import pytest

import support
import tasks_support as ts
from support import INSTANCE, MCP_PATH, UID, Server, mcp_session

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not ts.available(), reason="mcp 1.x has no client extensions (tasks need mcp 2.x)"),
]

EXAMPLES = support.REPO_ROOT / "packaging" / "examples"
DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}
TASK_KEY = "fleet-proxy-test-key-0123456789abcdef012345"
EXAMPLE_PORTS = ("7141", "7142", "7143")


def binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if Path(p).exists()), None)


def render(text: str, front: int, ports: list[int]) -> str:
    """The shipped config with the example ports replaced by the test's."""
    for example, port in zip(EXAMPLE_PORTS, ports):
        text = text.replace(f"127.0.0.1:{example}", f"127.0.0.1:{port}")
    text = text.replace("listen [::]:7140;", "")
    text = text.replace("listen 7140;", f"listen 127.0.0.1:{front};")
    return text.replace("bind :7140", f"bind 127.0.0.1:{front}")


@contextlib.contextmanager
def running_proxy(name: str, check: list[str], run: list[str], front: int, tmp: Path):
    """``name check...`` must accept the configuration; then ``name run...`` runs (in the
    foreground, stderr in tmp/NAME.stderr) until the context ends, once it listens on ``front``."""
    exe = binary(name)
    if exe is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}; .ci/run installs it)")
    checked = subprocess.run([exe, *check], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = tmp / f"{name}.stderr"
    proc = support.launch(run, dict(os.environ), argv0=[exe], stderr_path=log)
    try:
        support.wait_until(lambda: support.tcp_listening(front), 10, what=f"{name} listening on {front}", proc=proc)
        yield proc
    finally:
        support.stop_process(proc)


@contextlib.contextmanager
def nginx(tmp: Path, front: int, ports: list[int]):
    site = tmp / "sysom-mcp-fleet.conf"
    site.write_text(render((EXAMPLES / "nginx-fleet.conf").read_text(), front, ports))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(exist_ok=True)
    # What Debian's /etc/nginx/nginx.conf provides around sites-enabled/.
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off;
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {site};
}}
""")
    with running_proxy("nginx", ["-t", "-c", str(conf)], ["-c", str(conf)], front, tmp) as proc:
        yield proc


@contextlib.contextmanager
def haproxy(tmp: Path, front: int, ports: list[int]):
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(render((EXAMPLES / "haproxy.cfg").read_text(), front, ports))
    # -db: stay in the foreground (the packaged service runs it under systemd).
    with running_proxy("haproxy", ["-c", "-f", str(cfg)], ["-db", "-f", str(cfg)], front, tmp) as proc:
        yield proc


PROXIES = {"nginx": nginx, "haproxy": haproxy}


def running_calls(srv: Server) -> int:
    with urllib.request.urlopen(srv.base + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(r"^\S*tool_calls_running\S*\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def calls_finished(srv: Server) -> int:
    return srv.stderr_path.read_text(errors="replace").count("tool call memgraph finished")


async def legacy_sessions_spread_and_keep_their_instance(url: str, fleet: list[Server], n: int = 6) -> None:
    """`n` legacy SSE sessions open at once through the proxy, from one client address: their
    streams spread over the instances, and every POST of each session reaches its stream's
    instance (a POST reaching another one would get 404, the session unknown there, and the
    call would fail)."""
    before = [calls_finished(s) for s in fleet]
    opened = anyio.Event()
    ready: list[int] = []

    async def session():
        async with mcp_session("sse", url) as c:
            assert len(await c.list_tools()) == 21
            ready.append(1)
            if len(ready) == n:
                opened.set()
            await opened.wait()
            out = await c.call("memgraph", DIAG_ARGS)
            assert out["structuredContent"]["code"] == "Success", out

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(session)
        with anyio.fail_after(30):
            await opened.wait()
    # Each session's call ran on the instance holding its stream; the streams were spread.
    per_instance = [calls_finished(s) - b for s, b in zip(fleet, before)]
    assert sum(per_instance) == n and sum(1 for k in per_instance if k) >= 2, per_instance


def tasks_started(srv: Server) -> int:
    return srv.stderr_path.read_text(errors="replace").count("started as an MCP task")


async def until(predicate, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)


def kill(srv: Server) -> None:
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()


async def follow_through(url: str, handle: str, timeout: float = 60) -> "ts.TaskState":
    """tasks/get through the proxy until the task ends. A request may fail while the proxy has
    not yet noticed a dead instance; each poll is a fresh stateless client."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            async with ts.client(url) as c:
                state = await ts.get_task(c.session, handle)
            if state.status in ts.TERMINAL:
                return state
        except Exception as e:  # noqa: BLE001 -- reported if nothing succeeds in time
            last = e
        await anyio.sleep(0.3)
    raise TimeoutError(f"task not finished through the proxy: {last!r}")


@pytest.fixture
def fleet(mock, tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "task-keys").write_text(TASK_KEY + "\n")
    env = support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT="30", CREDENTIALS_DIRECTORY=str(creds))
    # Each instance's route id is its example port, as the template unit sets it (%i).
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Server(dict(env, SYSOM_MCP_ROUTE_ID=name), [])) for name in EXAMPLE_PORTS]


@pytest.mark.parametrize("proxy", sorted(PROXIES))
async def test_fleet_behind_the_shipped_proxy_config(proxy, fleet, mock, tmp_path):
    front = support.free_port()
    url = f"http://127.0.0.1:{front}{MCP_PATH}"
    with PROXIES[proxy](tmp_path, front, [s.port for s in fleet]):
        # 1. Session clients stay on their instance: every call of a Streamable HTTP session
        #    and of a legacy SSE session succeeds (a request reaching another instance would be
        #    refused: the session lives in one process).
        mock.scenario(diagnosis={"polls_before_done": 1})
        for transport in ("http", "sse"):
            async with mcp_session(transport, url) as c:
                assert len(await c.list_tools()) == 21
                for _ in range(3):
                    out = await c.call("memgraph", DIAG_ARGS)
                    assert out["structuredContent"]["code"] == "Success", (transport, out)

        # 1b. Legacy SSE sessions are pinned by their sessionId, not by client address.
        await legacy_sessions_spread_and_keep_their_instance(url, fleet)

        # 2. Stateless (2026-07-28) requests spread over the instances: six MCP tasks.
        handles = [None] * 6
        async with anyio.create_task_group() as tg:
            for i in range(6):
                async def start(i=i):
                    from test_mcp_tasks import start_task
                    handles[i] = await start_task(url, args=dict(DIAG_ARGS, instance=f"i-{i}"))
                tg.start_soon(start)
        served = [tasks_started(s) for s in fleet]
        assert sum(served) == 6 and sum(1 for n in served if n) >= 2, served
        for h in handles:
            assert (await follow_through(url, h.task_id)).status == "completed"

        # 3. A session client's instance dies mid-diagnosis: the call is lost, a new session
        #    (through the proxy, to a live instance) gets a result.
        mock.reset()
        mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 3})
        lost = None

        async def doomed():
            nonlocal lost
            try:
                async with mcp_session("http", url) as c:
                    await c.call("memgraph", DIAG_ARGS, timeout=20)
                lost = False
            except BaseException as e:  # noqa: BLE001 -- the connection or session is gone
                if isinstance(e, anyio.get_cancelled_exc_class()):
                    raise
                lost = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(doomed)
            await until(lambda: any(r["action"] == "GetDiagnosisResult" for r in mock.requests()))
            [victim] = [s for s in fleet if running_calls(s) > 0]
            kill(victim)
        assert lost, "the call whose instance died cannot have succeeded"
        survivors = [s for s in fleet if s is not victim]
        mock.scenario(diagnosis={"polls_before_done": 1, "seconds_before_done": 0})
        async with mcp_session("http", url) as c:
            out = await c.call("memgraph", DIAG_ARGS, timeout=30)
        assert out["structuredContent"]["code"] == "Success", out

        # 4. An MCP task's instance dies mid-diagnosis: the task completes through the proxy on
        #    the last instance, and SysOM saw one InvokeDiagnosis for it.
        before = {id(s): tasks_started(s) for s in survivors}
        mock.reset()
        mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 3})
        from test_mcp_tasks import start_task
        created = await start_task(url)
        [creator] = [s for s in survivors if tasks_started(s) > before[id(s)]]
        kill(creator)
        state = await follow_through(url, created.task_id)
        assert state.status == "completed", state
        assert state.result["structuredContent"]["code"] == "Success", state.result
        assert len(mock.requests(action="InvokeDiagnosis")) == 1
