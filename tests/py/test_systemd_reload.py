"""SIGHUP reload: no request lost under load, open legacy SSE sessions keep working, an invalid
new configuration is rejected (old one stays), a valid one applies to the next tool call."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import support
from control import MockSysom
from support import NotifySocket, mcp_post, stderr_text, tools_call, tools_list, wait_healthz, wait_until



@pytest.mark.anyio
async def test_sighup_under_load_loses_nothing_and_keeps_sse_sessions(sysom_bin, mock, config_file, procs):
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    port = support.free_port()
    proc = procs.binary(["--streamable-http", "--port", str(port), "--config", str(config_file)],
                        support.server_env(mock))
    wait_healthz(port=port, proc=proc)

    async with sse_client(f"http://127.0.0.1:{port}/mcp/unified") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            client = support.Client(session)
            assert len(await client.list_tools()) == 21

            results: list[object] = []
            lock = threading.Lock()
            stop_hup = threading.Event()

            enough_hups = threading.Event()

            def worker(n: int, base: int):
                # At least n requests each, and keep going until enough reloads overlapped the
                # load (tools/list alone is answered too fast to overlap anything). Alternate a
                # prepared answer with a tool call that goes through rmcp and the upstream.
                i = 0
                deadline = time.monotonic() + 20
                while (i < n or not enough_hups.is_set()) and time.monotonic() < deadline:
                    try:
                        if i % 2:
                            status, out = tools_call("list_history_tasks", {"days": 1}, rid=base + i,
                                                     port=port, timeout=20)
                            ok = status == 200 and out["result"]["structuredContent"]["code"] == "Success"
                        else:
                            status, out = tools_list(rid=base + i, port=port, timeout=20)
                            ok = status == 200 and len(out["result"]["tools"]) == 21
                        outcome = True if ok else (status, str(out)[:200])
                    except Exception as e:  # noqa: BLE001 - every failure is reported below
                        outcome = repr(e)
                    with lock:
                        results.append(outcome)
                    i += 1

            def load_with_hups() -> int:
                hups = 0
                threads = [threading.Thread(target=worker, args=(50, 1000 * k), daemon=True) for k in range(4)]
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    proc.send_signal(signal.SIGHUP)
                    hups += 1
                    if hups >= 5:
                        enough_hups.set()
                    time.sleep(0.1)
                for t in threads:
                    t.join(timeout=30)
                return hups

            import anyio
            hups = await anyio.to_thread.run_sync(load_with_hups)
            failures = [r for r in results if r is not True]
            assert len(results) >= 200 and not failures, failures[:5]
            assert hups >= 3, "the load finished before the reloads could overlap it"
            assert proc.poll() is None

            # The legacy SSE session opened before the reloads still works.
            assert len(await client.list_tools()) == 21
            out = support.payload(await client.call("list_all_instances", support.MINIMAL_ARGS["list_all_instances"]))
            assert out["code"] == "Success", out

    wait_until(lambda: stderr_text(proc).count("configuration reloaded") >= 3, 10, what="reload log lines")
    assert "reload rejected" not in stderr_text(proc)


def reload_and_wait(proc, notify: NotifySocket, what: str) -> None:
    """SIGHUP, then wait for READY=1 (the reload finished either way) and the log line."""
    before = stderr_text(proc).count(what)
    mark = notify.mark()
    proc.send_signal(signal.SIGHUP)
    notify.wait_for(lambda d: d.startswith(b"READY=1"), since=mark, timeout=10)
    wait_until(lambda: stderr_text(proc).count(what) > before, 5, what=what)


def call_and_find(port: int, mock_a, mock_b) -> str:
    """Calls list_all_instances; returns which mock got the request ("a" or "b")."""
    na, nb = len(mock_a.requests(action="ListAllInstances")), len(mock_b.requests(action="ListAllInstances"))
    status, out = tools_call("list_all_instances", support.MINIMAL_ARGS["list_all_instances"], port=port)
    assert status == 200 and not out["result"].get("isError"), out
    assert out["result"]["structuredContent"]["code"] == "Success", out
    da = len(mock_a.requests(action="ListAllInstances")) - na
    db = len(mock_b.requests(action="ListAllInstances")) - nb
    assert (da, db) in ((1, 0), (0, 1)), (da, db)
    return "a" if da else "b"


def test_reload_rejects_invalid_config_and_applies_valid_one(sysom_bin, mock, tmp_path, procs):
    mock_b = MockSysom(access_key_id=mock.access_key_id, access_key_secret=mock.access_key_secret)
    try:
        with NotifySocket() as notify:
            port = support.free_port()
            cfg = tmp_path / "config.toml"
            cfg.write_text(f'endpoint = "{mock.url}"\n')
            # The endpoint comes from the file only (the environment would win over it).
            env = support.server_env(mock, SYSOM_ENDPOINT=None, NOTIFY_SOCKET=notify.path)
            proc = procs.binary(["--streamable-http", "--port", str(port), "--config", str(cfg)], env)
            wait_healthz(port=port, proc=proc)
            assert call_and_find(port, mock, mock_b) == "a"

            # Invalid: unknown key (and a new endpoint that must not half-apply).
            cfg.write_text(f'endpoint = "{mock_b.url}"\nbogus_reload_key = 1\n')
            reload_and_wait(proc, notify, "reload rejected")
            log = stderr_text(proc)
            rejected = log[log.index("reload rejected"):]  # the TOML error spans several lines
            assert "bogus_reload_key" in rejected, rejected
            assert proc.poll() is None
            assert call_and_find(port, mock, mock_b) == "a", "the rejected configuration was applied"
            status, _ = tools_list(port=port)
            assert status == 200

            # Valid: the new endpoint takes effect for the next tool call.
            cfg.write_text(f'endpoint = "{mock_b.url}"\n')
            reload_and_wait(proc, notify, "configuration reloaded")
            assert call_and_find(port, mock, mock_b) == "b"

            # A token file that cannot be read is part of the same all-or-nothing reload.
            cfg.write_text(f'endpoint = "{mock.url}"\n[auth]\ntoken_files = ["{tmp_path / "absent-tokens"}"]\n')
            reload_and_wait(proc, notify, "reload rejected")
            assert call_and_find(port, mock, mock_b) == "b"
            status, _ = tools_list(port=port)
            assert status == 200, "a rejected token reload locked clients out"
    finally:
        mock_b.stop()


def test_reload_picks_up_rotated_tokens_and_new_credential_files(sysom_bin, mock, config_file, tmp_path,
                                                                 procs):
    creds = tmp_path / "credentials"
    creds.mkdir()
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token-1111\n")
    port = support.free_port()
    with NotifySocket() as notify:
        env = support.server_env(mock, ACCESS_KEY_ID=None, ACCESS_KEY_SECRET=None, CREDENTIALS_DIRECTORY=str(creds),
                                 NOTIFY_SOCKET=notify.path)
        proc = procs.binary(["--streamable-http", "--port", str(port), "--config", str(config_file),
                             "--token-file", str(tokens)], env)
        wait_healthz(port=port, proc=proc)
        auth = {"Authorization": "Bearer old-token-1111"}
        status, out = tools_call("list_all_instances", support.MINIMAL_ARGS["list_all_instances"], port=port,
                                 headers=auth)
        assert status == 200
        assert out["result"]["structuredContent"]["code"] != "Success", "answered without credentials?"

        # Rotate the token and provide credentials through LoadCredential-style files, then reload.
        tokens.write_text("new-token-2222\n")
        (creds / "access-key-id").write_text(mock.access_key_id)
        (creds / "access-key-secret").write_text(mock.access_key_secret)
        reload_and_wait(proc, notify, "configuration reloaded")
        status, _ = tools_list(port=port, headers=auth)
        assert status == 401, "the removed token still works after reload"
        status, out = tools_call("list_all_instances", support.MINIMAL_ARGS["list_all_instances"], port=port,
                                 headers={"Authorization": "Bearer new-token-2222"})
        assert status == 200
        assert out["result"]["structuredContent"]["code"] == "Success", out


def make_cert(directory, cn: str) -> tuple[str, str]:
    cert, key = directory / f"{cn}.crt", directory / f"{cn}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def served_cert_cn(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                          capture_output=True, check=True, timeout=10).stdout.decode()
    return text.strip().split("CN", 1)[1].lstrip(" =")


def test_reload_rotates_tls_certificate(sysom_bin, mock, tmp_path, procs):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    first_cert, first_key = make_cert(tmp_path, "first")
    second_cert, second_key = make_cert(tmp_path, "second")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(first_cert, live_cert)
    shutil.copy(first_key, live_key)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[tls]\ncert = "{live_cert}"\nkey = "{live_key}"\n')
    port = support.free_port()
    with NotifySocket() as notify:
        proc = procs.binary(["--streamable-http", "--port", str(port), "--config", str(cfg)],
                            support.server_env(mock, NOTIFY_SOCKET=notify.path))
        notify.wait_for(lambda d: d.startswith(b"READY=1"), timeout=15)
        assert served_cert_cn(port) == "first"

        # A broken key is rejected as a whole; the old certificate keeps being served.
        live_key.write_text("not a key\n")
        reload_and_wait(proc, notify, "reload rejected")
        assert served_cert_cn(port) == "first"

        shutil.copy(second_cert, live_cert)
        shutil.copy(second_key, live_key)
        reload_and_wait(proc, notify, "configuration reloaded")
        assert served_cert_cn(port) == "second"
        assert proc.poll() is None


def test_reload_command_returns_only_once_the_new_tokens_apply(sysom_bin, mock, config_file, tmp_path,
                                                               procs):
    """`sysom-mcp reload` (the unit's ExecReload=) waits for the server: right after it exits 0,
    a removed token is refused. A rejected reload makes it exit 1 with the reason; without a
    server to answer it gives up with a clear message instead of hanging."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    status_file = runtime / "reload-status"
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token-1111\nnew-token-2222\n")
    port = support.free_port()
    env = support.server_env(mock, RUNTIME_DIRECTORY=str(runtime))
    proc = procs.binary(["--streamable-http", "--port", str(port), "--config", str(config_file),
                         "--token-file", str(tokens)], env)
    wait_healthz(port=port, proc=proc)
    old = {"Authorization": "Bearer old-token-1111"}
    new = {"Authorization": "Bearer new-token-2222"}
    assert tools_list(port=port, headers=old)[0] == 200

    def reload(timeout: str = "15") -> subprocess.CompletedProcess:
        return subprocess.run([sysom_bin, "reload", "--pid", str(proc.pid), "--status-file", str(status_file),
                               "--timeout-secs", timeout], capture_output=True, text=True, timeout=30)

    for _ in range(5):  # each round would race without the handshake
        tokens.write_text("new-token-2222\n")
        done = reload()
        assert done.returncode == 0, done.stderr
        assert tools_list(port=port, headers=old)[0] == 401, "reload returned before the tokens applied"
        assert tools_list(port=port, headers=new)[0] == 200
        tokens.write_text("old-token-1111\nnew-token-2222\n")
        done = reload()
        assert done.returncode == 0, done.stderr
        assert tools_list(port=port, headers=old)[0] == 200

    # Rejected: an empty token list keeps the current tokens, and the command says so.
    tokens.write_text("")
    done = reload()
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "token list is empty" in done.stderr, done.stderr
    assert "old-token" not in done.stderr + done.stdout
    assert tools_list(port=port, headers=old)[0] == 200

    # No answer: a process that is not a sysom-mcp server never writes the status file.
    sleeper = subprocess.Popen(["sh", "-c", "trap '' HUP; sleep 30"])
    try:
        done = subprocess.run([sysom_bin, "reload", "--pid", str(sleeper.pid), "--status-file",
                               str(tmp_path / "none"), "--timeout-secs", "1"], capture_output=True, text=True,
                              timeout=30)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert done.returncode == 1
    assert "did not confirm the reload" in done.stderr, done.stderr


def test_reload_names_each_restart_only_setting_and_keeps_it(sysom_bin, mock, tmp_path, procs):
    """A reload applies what it can (here max_sessions) and names, key by key, what needs a
    restart (port, keep-alive, body limit); those keep their start-up values on both transports."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    port = support.free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'endpoint = "{mock.url}"\n[server]\nport = {port}\n')
    env = support.server_env(mock, SYSOM_ENDPOINT=None, RUNTIME_DIRECTORY=str(runtime))
    proc = procs.binary(["--streamable-http", "--config", str(cfg)], env)
    wait_healthz(port=port, proc=proc)
    cfg.write_text(f'endpoint = "{mock.url}"\n[server]\nport = {support.free_port()}\nsse_keep_alive_secs = 2\n'
                   "max_body_bytes = 2048\n[limits]\nmax_sessions = 7\n")
    done = subprocess.run([sysom_bin, "reload", "--pid", str(proc.pid), "--status-file",
                           str(runtime / "reload-status")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    log = stderr_text(proc)
    for key in ("server.port", "server.sse_keep_alive_secs", "server.max_body_bytes"):
        assert f"{key} changed but needs a restart" in log, (key, log[-2000:])
    assert "limits.max_sessions changed" not in log
    # Still on the old port, and the old 4 MiB body limit still holds on the plain POST path.
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x" * 4096}}
    status, out = mcp_post(big, port=port)
    assert status == 200, (status, out)
