"""`sysom-mcp proxy URL`: a stdio MCP server for stdio-only clients, forwarding to a remote
sysom-mcp over Streamable HTTP, or over legacy SSE when the remote only speaks that."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
from pathlib import Path

import pytest

import support
from support import INSTANCE, MCP_PATH, UID, payload, write_tokens

TOKEN = "tok-proxy-" + "b" * 24
DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}


@contextlib.asynccontextmanager
async def proxy_session(url: str, token_file: Path, env: dict[str, str]):
    """The real mcp client talking stdio to `sysom-mcp proxy URL --token-file F`."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=str(support.binary_path()),
                                   args=["proxy", url, "--token-file", str(token_file)], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield support.Client(session)


class SseOnlyGateway(http.server.ThreadingHTTPServer):
    """Stands in for a server that only has the legacy transport: POSTs to the MCP path get 405,
    the SSE stream and the message posts are relayed to the real server unchanged."""

    daemon_threads = True

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.refused_posts = 0
        super().__init__(("127.0.0.1", 0), _Relay)


class _Relay(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _relay(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(method, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        while chunk := resp.read1(65536):  # stream SSE events as they come
            self.wfile.write(chunk)
            self.wfile.flush()
        conn.close()

    def do_GET(self):  # noqa: N802
        self._relay("GET")

    def do_POST(self):  # noqa: N802
        if self.path.split("?")[0] == MCP_PATH:
            self.server.refused_posts += 1
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(405)
            self.send_header("Allow", "GET")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._relay("POST")


@pytest.mark.anyio
async def test_proxy_forwards_over_streamable_http(start, mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 3})
    tokens = write_tokens(tmp_path / "tokens", TOKEN)
    srv = start(["--token-file", str(tokens)])
    async with proxy_session(srv.url, tokens, support.server_env(mock)) as client:
        assert len(await client.list_tools()) == 21
        seen: list[float] = []

        async def on_progress(progress, total, message):
            seen.append(progress)

        out = payload(await client.call("memgraph", DIAG_ARGS, progress=on_progress, timeout=30))
        assert out["code"] == "Success", out
        assert seen, "progress notifications were not forwarded through the proxy"
        bad = await client.call("list_history_tasks", {"days": 0})
        assert bad["isError"] and "`days`" in support.result_text(bad)
    assert "sessionId" not in " ".join(r["raw_query"] for r in mock.requests() if "raw_query" in r)


@pytest.mark.anyio
async def test_proxy_falls_back_to_legacy_sse(start, mock, tmp_path):
    tokens = write_tokens(tmp_path / "tokens", TOKEN)
    srv = start(["--token-file", str(tokens)])
    gateway = SseOnlyGateway(int(srv.url.split(":")[2].split("/")[0]))
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{gateway.server_address[1]}{MCP_PATH}"
        async with proxy_session(url, tokens, support.server_env(mock)) as client:
            assert len(await client.list_tools()) == 21
            out = payload(await client.call("list_all_instances", {"uid": UID}))
            assert out["code"] == "Success", out
        assert gateway.refused_posts >= 1, "the proxy never tried Streamable HTTP first"
    finally:
        gateway.shutdown()
        gateway.server_close()


def test_proxy_refuses_bad_arguments(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    out = support.run_binary(["proxy", "not a url"], env)
    assert out.returncode == 2 and "not a URL" in out.stderr
    out = support.run_binary(["proxy", "http://127.0.0.1:9/mcp/unified", "--token-file",
                              str(tmp_path / "absent")], env)
    assert out.returncode == 2 and "cannot read" in out.stderr
    empty = tmp_path / "empty"
    empty.write_text("# no token\n")
    out = support.run_binary(["proxy", "http://127.0.0.1:9/mcp/unified", "--token-file", str(empty)], env)
    assert out.returncode == 2 and "holds no token" in out.stderr


@pytest.mark.anyio
@pytest.mark.skipif(support.MCP_MAJOR < 2, reason="mcp 1.x does not send notifications/cancelled when the "
                                                  "caller abandons a request")
async def test_cancellation_travels_through_the_proxy(start, mock, tmp_path):
    import anyio

    from test_stdio_progress_cancel import assert_polling_stopped_async, poll_count

    mock.scenario(diagnosis={"final": "never"})
    tokens = write_tokens(tmp_path / "tokens", TOKEN)
    srv = start(["--token-file", str(tokens)], env=support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT="60"))
    async with proxy_session(srv.url, tokens, support.server_env(mock)) as client:
        with anyio.move_on_after(0.8) as scope:
            await client.call("packetdrop", DIAG_ARGS)
        assert scope.cancelled_caught
        assert poll_count(mock) >= 1
        await assert_polling_stopped_async(mock)


class HostileSseRemote(http.server.ThreadingHTTPServer):
    """An SSE-only remote that misbehaves: `endpoint` names the message URL to announce, and
    `flood` (bytes) is sent after it as one event that never ends. Every request's
    Authorization header is recorded, per path."""

    daemon_threads = True

    def __init__(self, endpoint: str = "/mcp/unified/messages?sessionId=1", flood: int = 0):
        self.endpoint = endpoint
        self.flood = flood
        self.authorizations: list[tuple[str, str | None]] = []
        self.done = threading.Event()
        super().__init__(("127.0.0.1", 0), _Hostile)

    def url(self, path: str = MCP_PATH) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        self.server.authorizations.append((self.path, self.headers.get("Authorization")))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 405 if self.path.split("?")[0] == MCP_PATH else 202
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        self.server.authorizations.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(f"event: endpoint\ndata: {self.server.endpoint}\n\n".encode())
            self.wfile.flush()
            if self.server.flood:
                self.wfile.write(b"data: ")
                chunk = b"x" * 65536
                for _ in range(self.server.flood // len(chunk)):
                    self.wfile.write(chunk)
                self.wfile.flush()
            self.server.done.wait(30)
        except OSError:
            pass  # the proxy hung up: what the flood test expects


@contextlib.contextmanager
def hostile_remote(**kwargs):
    remote = HostileSseRemote(**kwargs)
    threading.Thread(target=remote.serve_forever, daemon=True).start()
    try:
        yield remote
    finally:
        remote.done.set()
        remote.shutdown()
        remote.server_close()


def test_proxy_posts_the_token_only_to_the_same_origin(tmp_path):
    """17.10: a remote whose `endpoint` event names another origin gets no token sent there."""
    tokens = write_tokens(tmp_path / "tokens", TOKEN)
    with hostile_remote() as collector, \
            hostile_remote(endpoint=collector.url("/collect?sessionId=1")) as remote:
        out = support.run_binary(["proxy", remote.url(), "--token-file", str(tokens)],
                                 {"PATH": "/usr/bin:/bin"}, timeout=30)
        assert out.returncode == 1, out.stderr
        assert "another origin" in out.stderr, out.stderr
        assert collector.authorizations == [], "the token was sent to another origin"
        assert TOKEN not in out.stderr


def test_proxy_drops_an_sse_event_that_never_ends(tmp_path):
    """17.8: a remote that never ends an event (16 MiB without a blank line) is cut off once the
    event outgrows the limit, instead of being buffered and rescanned for ever."""
    tokens = write_tokens(tmp_path / "tokens", TOKEN)
    with hostile_remote(flood=16 << 20) as remote:
        out = support.run_binary(["proxy", remote.url(), "--token-file", str(tokens)],
                                 {"PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "grew beyond" in out.stderr, out.stderr
