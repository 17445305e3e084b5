"""SIGHUP reload: no request lost under load, open legacy SSE sessions keep working, an invalid
new configuration is rejected (old one stays), a valid one applies to the next tool call."""

from __future__ import annotations

import signal
import threading
import time

import pytest

import harness
from control import MockSysom
from systemd_support import (NotifySocket, procs, stderr_text, tools_call, tools_list, wait_healthz,  # noqa: F401
                             wait_until)

pytestmark = pytest.mark.anyio


async def test_sighup_under_load_loses_nothing_and_keeps_sse_sessions(sysom_bin, mock, config_file, procs):  # noqa: F811
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    port = harness.free_port()
    proc = procs.binary(["--streamable-http", "--port", str(port), "--config", str(config_file)],
                        harness.server_env(mock))
    wait_healthz(port=port, proc=proc)

    async with sse_client(f"http://127.0.0.1:{port}/mcp/unified") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            client = harness.Client(session)
            assert len(await client.list_tools()) == 21

            results: list[object] = []
            lock = threading.Lock()
            stop_hup = threading.Event()

            def worker(n: int, base: int):
                for i in range(n):
                    try:
                        status, out = tools_list(rid=base + i, port=port, timeout=20)
                        ok = status == 200 and len(out["result"]["tools"]) == 21
                        outcome = True if ok else (status, str(out)[:200])
                    except Exception as e:  # noqa: BLE001 - every failure is reported below
                        outcome = repr(e)
                    with lock:
                        results.append(outcome)

            def load_with_hups() -> int:
                hups = 0
                threads = [threading.Thread(target=worker, args=(50, 1000 * k), daemon=True) for k in range(4)]
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    proc.send_signal(signal.SIGHUP)
                    hups += 1
                    time.sleep(0.1)
                for t in threads:
                    t.join(timeout=30)
                return hups

            import anyio
            hups = await anyio.to_thread.run_sync(load_with_hups)
            failures = [r for r in results if r is not True]
            assert len(results) == 200 and not failures, failures[:5]
            assert hups >= 3, "the load finished before the reloads could overlap it"
            assert proc.poll() is None

            # The legacy SSE session opened before the reloads still works.
            assert len(await client.list_tools()) == 21
            out = harness.payload(await client.call("list_all_instances", harness.MINIMAL_ARGS["list_all_instances"]))
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
    status, out = tools_call("list_all_instances", harness.MINIMAL_ARGS["list_all_instances"], port=port)
    assert status == 200 and not out["result"].get("isError"), out
    assert out["result"]["structuredContent"]["code"] == "Success", out
    da = len(mock_a.requests(action="ListAllInstances")) - na
    db = len(mock_b.requests(action="ListAllInstances")) - nb
    assert (da, db) in ((1, 0), (0, 1)), (da, db)
    return "a" if da else "b"


def test_reload_rejects_invalid_config_and_applies_valid_one(sysom_bin, mock, tmp_path, procs):  # noqa: F811
    mock_b = MockSysom(access_key_id=mock.access_key_id, access_key_secret=mock.access_key_secret)
    try:
        with NotifySocket() as notify:
            port = harness.free_port()
            cfg = tmp_path / "config.toml"
            cfg.write_text(f'endpoint = "{mock.url}"\n')
            # The endpoint comes from the file only (the environment would win over it).
            env = harness.server_env(mock, SYSOM_ENDPOINT=None, NOTIFY_SOCKET=notify.path)
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
