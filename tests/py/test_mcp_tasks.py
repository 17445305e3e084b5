"""MCP tasks (io.modelcontextprotocol/tasks) with the real Python ``mcp`` 2.x client: a diagnosis
becomes a task whose id is a sealed handle; any instance holding the key answers ``tasks/get``
by asking SysOM, so the task outlives the instance that created it. Forged, expired, tampered
and foreign handles are refused; the key ring comes from $CREDENTIALS_DIRECTORY/task-keys (or the
file the shipped units stage from /etc/sysom-mcp/credentials) and rotates on SIGHUP / reload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import subprocess
import time

import anyio
import pytest

import support
import tasks_support as ts
from support import INSTANCE, UID, Server

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not ts.available(), reason="mcp 1.x has no client extensions (tasks need mcp 2.x)"),
]

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}
KEY1 = "fleet-test-key-one-0123456789abcdef0123"
KEY2 = "fleet-test-key-two-0123456789abcdef0123"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seal(key: str, claims: dict) -> str:
    """A handle as sysom-mcp seals it (v1.<key id>.<claims>.<HMAC-SHA256 tag>)."""
    kid = hashlib.sha256(key.encode()).hexdigest()[:8]
    signed = f"v1.{kid}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{signed}.{b64(hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest())}"


def claims_of(handle: str) -> dict:
    body = handle.split(".")[2]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def key_dir(tmp_path, *keys: str, name: str = "credentials"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "task-keys").write_text("# newest first\n" + "".join(f"{k}\n" for k in keys))
    return d


def fleet_env(mock, creds=None, **extra):
    env = support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT="30", **extra)
    if creds is not None:
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    return env


async def start_task(url: str, name: str = "memgraph", args: dict | None = None,
                     token: str | None = None) -> "ts.TaskCreated":
    """tools/call as a task; returns the task without following it."""
    async def keep(created, ctx):
        raise _Created(created)

    class _Created(Exception):
        def __init__(self, created):
            self.created = created

    async with ts.client(url, ts.TasksExtension(poll=keep), token) as c:
        try:
            await c.call_tool(name, args or DIAG_ARGS)
        except _Created as got:
            return got.created
    raise AssertionError("the diagnosis did not answer with a task")


async def get_state(url: str, handle: str, token: str | None = None):
    """tasks/get through a fresh client: the TaskState, or the MCPError it was refused with
    (caught inside the client, whose task group would wrap it)."""
    from mcp.shared.exceptions import MCPError
    async with ts.client(url, token=token) as c:
        try:
            return await ts.get_task(c.session, handle)
        except MCPError as e:
            return e


def refusal(outcome) -> str:
    from mcp.shared.exceptions import MCPError
    assert isinstance(outcome, MCPError), f"expected a refusal, got {outcome!r}"
    assert outcome.error.code == -32602, outcome.error
    return outcome.error.message


def invokes(mock):
    return mock.requests(action="InvokeDiagnosis")


# --- one instance --------------------------------------------------------------------------------

async def test_a_diagnosis_becomes_a_task_and_completes_through_tasks_get(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 3})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        ext = ts.TasksExtension()
        async with ts.client(srv.url, ext) as c:
            result = await c.call_tool("memgraph", DIAG_ARGS)
    created, final = ext.created[0], ext.final[0]
    assert created.status == "working" and created.poll_interval_ms, created
    claims = claims_of(created.task_id)
    assert claims["s"] == "memgraph" and claims["r"] == "cn-hangzhou", claims
    assert claims["t"] == final.result["structuredContent"]["task_id"]
    assert final.status == "completed"
    assert result.structured_content["code"] == "Success", result
    assert len(invokes(mock)) == 1


async def test_a_client_without_the_extension_gets_the_plain_result(mock, tmp_path):
    """No tasks capability declared: the call runs to its result as before."""
    from support import mcp_session
    mock.scenario(diagnosis={"polls_before_done": 2})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1))) as srv:
        async with mcp_session("http", srv.url) as c:
            out = await c.call("memgraph", DIAG_ARGS)
    assert out["structuredContent"]["code"] == "Success", out


async def test_a_failed_diagnosis_is_a_completed_task_with_an_error_result(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 1, "final": "Fail"})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        ext = ts.TasksExtension()
        async with ts.client(srv.url, ext) as c:
            result = await c.call_tool("memgraph", DIAG_ARGS)
    assert ext.final[0].status == "completed"
    assert result.is_error and result.structured_content["code"] == "TaskExecuteFailed", result


# --- the fleet: created on A, answered by B -------------------------------------------------------

async def test_a_task_created_on_a_completes_on_b_after_a_is_killed(mock, tmp_path):
    """The instance that created the task dies mid-diagnosis; another one with the same key
    answers tasks/get from SysOM, and SysOM saw one InvokeDiagnosis."""
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 2})
    creds = key_dir(tmp_path, KEY1)
    with Server(fleet_env(mock, creds), ["--stateless"]) as a, \
            Server(fleet_env(mock, creds), ["--stateless"]) as b:
        states: list = []

        async def on_b(created, ctx):
            a.proc.kill()  # SIGKILL: nothing of A survives
            a.proc.wait()
            async with ts.client(b.url) as cb:
                return await ts.follow(cb.session, created.task_id, states=states)

        ext = ts.TasksExtension(poll=on_b)
        async with ts.client(a.url, ext) as ca:
            await ca.list_tools()  # the output schema the client checks the result against
            result = await ca.call_tool("memgraph", DIAG_ARGS)
    assert a.proc.returncode == -signal.SIGKILL
    assert states[0].status == "working", "the diagnosis was still running when A died"
    assert states[-1].status == "completed"
    assert result.structured_content["code"] == "Success", result
    assert len(invokes(mock)) == 1, "B must not start another diagnosis"


async def test_without_a_key_file_instances_of_one_host_share_the_boot_key(mock):
    mock.scenario(diagnosis={"polls_before_done": 2})
    with Server(fleet_env(mock), ["--stateless"]) as a, Server(fleet_env(mock), ["--stateless"]) as b:
        created = await start_task(a.url)
        async with ts.client(b.url) as cb:
            final = await ts.follow(cb.session, created.task_id)
        assert "derived for this boot" in a.stderr()
    assert final.status == "completed"


async def test_an_instance_with_another_key_refuses_the_handle(mock, tmp_path):
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1, name="a")), ["--stateless"]) as a, \
            Server(fleet_env(mock, key_dir(tmp_path, KEY2, name="b")), ["--stateless"]) as b:
        created = await start_task(a.url)
        outcome = await get_state(b.url, created.task_id)
    assert "not issued by this service" in refusal(outcome)


# --- refused handles ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["forged", "expired", "foreign", "tampered", "garbage"])
async def test_bad_handles_are_refused(mock, tmp_path, case):
    now = int(time.time())
    claims = {"t": "mock-t1", "r": "cn-hangzhou", "s": "memgraph", "p": "anonymous:anonymous",
              "c": now, "e": now + 600}
    handle = {
        "forged": seal("an-attacker-key-0123456789abcdef01234567", claims),
        "expired": seal(KEY1, dict(claims, c=now - 7200, e=now - 60)),
        "foreign": seal(KEY1, dict(claims, p="token:mallory")),
        "tampered": seal(KEY1, claims).replace(b64(json.dumps(claims, separators=(',', ':')).encode()),
                                               b64(json.dumps(dict(claims, t="mock-other"),
                                                              separators=(',', ':')).encode())),
        "garbage": "not-a-handle",
    }[case]
    want = {"forged": "not issued by this service", "expired": "expired", "foreign": "another principal",
            "tampered": "not issued by this service", "garbage": "malformed"}[case]
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        # The same handle sealed correctly is accepted: the refusals are about the defect only.
        ok = await get_state(srv.url, seal(KEY1, claims))
        assert ok.status in {"working", "completed"}
        message = refusal(await get_state(srv.url, handle))
        assert handle not in srv.stderr()
    assert want in message, message
    assert handle not in message


async def test_cancel_marks_the_task_cancelled_on_that_instance(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 30})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        created = await start_task(srv.url)
        async with ts.client(srv.url) as c:
            await ts.cancel_task(c.session, created.task_id)
            state = await ts.get_task(c.session, created.task_id)
    assert state.status == "cancelled"


async def test_a_handle_opens_only_for_the_token_that_created_it(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 1})
    tokens = tmp_path / "mcp-tokens"
    alice, bob = (support.new_token(tokens, name, "read,diagnose") for name in ("alice", "bob"))
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless", "--token-file", str(tokens)]) as srv:
        created = await start_task(srv.url, token=alice)
        assert claims_of(created.task_id)["p"] == "token:alice"
        assert (await get_state(srv.url, created.task_id, alice)).status in {"working", "completed"}
        assert "another principal" in refusal(await get_state(srv.url, created.task_id, bob))


# --- the key ring ---------------------------------------------------------------------------------

async def test_keys_rotate_on_reload(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 1})
    creds = key_dir(tmp_path, KEY1)
    with Server(fleet_env(mock, creds), ["--stateless"]) as srv:
        old = await start_task(srv.url)
        kid1 = old.task_id.split(".")[1]
        (creds / "task-keys").write_text(f"{KEY2}\n{KEY1}\n")
        srv.sighup_and_wait()
        assert (await get_state(srv.url, old.task_id)).status in {"working", "completed"}, \
            "a handle sealed with the previous key still opens"
        new = await start_task(srv.url)
        assert new.task_id.split(".")[1] != kid1, "the new first key seals"
        (creds / "task-keys").write_text(f"{KEY2}\n")
        srv.sighup_and_wait()
        assert "not issued by this service" in refusal(await get_state(srv.url, old.task_id))
        assert (await get_state(srv.url, new.task_id)).status in {"working", "completed"}
        # A malformed file is rejected on reload and the ring in use stays.
        (creds / "task-keys").write_text("too-short\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log("reload rejected")
        assert "too-short" not in srv.stderr()
        assert (await get_state(srv.url, new.task_id)).status in {"working", "completed"}


def unit_lines(unit: str, key: str) -> list[str]:
    """The values of `key=` lines of a shipped unit file."""
    text = (support.REPO_ROOT / unit).read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def unit_command(value: str, runtime, source, pid: int | None = None) -> list[str]:
    """An Exec*= line of the unit as systemd would run it here: %t/%N is `runtime`, the
    credentials directory `source`, $MAINPID the server; `+` (run privileged) dropped."""
    import shlex
    value = value.lstrip("+")
    value = value.replace("%t/%N", str(runtime)).replace("/etc/sysom-mcp/credentials", str(source))
    value = value.replace("$MAINPID", str(pid)).replace("$$", "$")
    value = value.replace("/usr/bin/sysom-mcp", str(support.binary_path()))
    return shlex.split(value)


@pytest.mark.parametrize("unit", ["systemd/sysom-mcp.service", "packaging/examples/sysom-mcp@.service"])
async def test_the_units_reload_restages_the_key_ring(mock, tmp_path, unit):
    """The unit copies task-keys into its runtime directory before start and again on
    ExecReload, so rotating the ring is `systemctl reload`: a handle sealed with the old key
    opens while that key is still listed, and not once it is dropped."""
    mock.scenario(diagnosis={"polls_before_done": 1})
    token = "unit-reload-token-0123456789"
    source, runtime = tmp_path / "etc-credentials", tmp_path / "run"
    source.mkdir()
    runtime.mkdir()
    (source / "mcp-tokens").write_text(f"{token}\n")
    (source / "task-keys").write_text(f"{KEY1}\n")
    [pre] = unit_lines(unit, "ExecStartPre")
    subprocess.run(unit_command(pre, runtime, source), check=True, timeout=10)
    env = fleet_env(mock, RUNTIME_DIRECTORY=str(runtime))
    for value in unit_lines(unit, "Environment"):
        name, _, path = value.partition("=")
        if name in ("SYSOM_MCP_TOKEN_FILE", "SYSOM_MCP_TASK_KEY_FILE"):
            env[name] = path.replace("%t/%N", str(runtime))
    assert env.get("SYSOM_MCP_TASK_KEY_FILE"), f"{unit} does not point the server at a staged key file"
    [reload_line] = unit_lines(unit, "ExecReload")

    with Server(env, ["--stateless"]) as srv:
        def reload():
            done = subprocess.run(unit_command(reload_line, runtime, source, srv.proc.pid),
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr

        old = await start_task(srv.url, token=token)
        (source / "task-keys").write_text(f"{KEY2}\n{KEY1}\n")
        reload()
        assert (await get_state(srv.url, old.task_id, token)).status in {"working", "completed"}, \
            "a handle sealed with the previous key still opens"
        new = await start_task(srv.url, token=token)
        assert new.task_id.split(".")[1] != old.task_id.split(".")[1], "the new first key seals"
        (source / "task-keys").write_text(f"{KEY2}\n")
        reload()
        assert "not issued by this service" in refusal(await get_state(srv.url, old.task_id, token))
        assert (await get_state(srv.url, new.task_id, token)).status in {"working", "completed"}


async def test_without_a_key_file_the_units_empty_staged_file_means_the_boot_key(mock, tmp_path):
    """No /etc/sysom-mcp/credentials/task-keys: the unit stages an empty file, which the server
    takes as no key file (like systemd's blank SetCredential=), not as a broken one."""
    unit = "systemd/sysom-mcp.service"
    source, runtime = tmp_path / "etc-credentials", tmp_path / "run"
    source.mkdir()
    runtime.mkdir()
    [pre] = unit_lines(unit, "ExecStartPre")
    subprocess.run(unit_command(pre, runtime, source), check=True, timeout=10)
    assert (runtime / "task-keys").read_text() == ""
    env = fleet_env(mock, RUNTIME_DIRECTORY=str(runtime), SYSOM_MCP_TASK_KEY_FILE=str(runtime / "task-keys"))
    with Server(env, ["--stateless"]) as srv:
        created = await start_task(srv.url)
        assert "derived for this boot" in srv.stderr()
        assert (await get_state(srv.url, created.task_id)).status in {"working", "completed"}


def test_a_malformed_key_file_stops_the_start_with_exit_2(mock, tmp_path):
    creds = key_dir(tmp_path, KEY1, "short-key")
    env = fleet_env(mock, creds)
    proc = support.run_binary(["--sse", "--port", str(support.free_port())], env)
    assert proc.returncode == 2, proc.stderr
    assert "task-keys" in proc.stderr and "line 3" in proc.stderr, proc.stderr  # after the comment line
    assert "short-key" not in proc.stderr and KEY1 not in proc.stderr


async def test_two_concurrent_task_clients_get_their_own_results(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 2})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        results = []

        async def one(instance):
            async with ts.client(srv.url) as c:
                results.append(await c.call_tool("memgraph", dict(DIAG_ARGS, instance=instance)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "i-a")
            tg.start_soon(one, "i-b")
    assert [r.structured_content["code"] for r in results] == ["Success", "Success"]
    assert len(invokes(mock)) == 2


# --- coalescing ----------------------------------------------------------------------------------

async def test_identical_task_calls_share_one_upstream_task_each_with_its_own_handle(mock, tmp_path):
    """Two identical diagnoses asked as tasks at once: one InvokeDiagnosis, two handles for the
    same SysOM task, both completing; cancelling one leaves the other. Once the diagnosis has
    finished, the same call starts a new one (a finished diagnosis is not reused)."""
    mock.scenario(diagnosis={"polls_before_done": 4})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        created: list = []

        async def one():
            created.append(await start_task(srv.url))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        a, b = created
        assert a.task_id != b.task_id, "each caller gets its own handle"
        assert claims_of(a.task_id)["t"] == claims_of(b.task_id)["t"], "for one SysOM task"
        assert len(invokes(mock)) == 1
        async with ts.client(srv.url) as c:
            await ts.cancel_task(c.session, a.task_id)
            state = await ts.follow(c.session, b.task_id)
        assert state.status == "completed", state
        assert state.result["structuredContent"]["code"] == "Success", state.result

        again = await start_task(srv.url)
        assert claims_of(again.task_id)["t"] != claims_of(b.task_id)["t"]
        assert len(invokes(mock)) == 2
