"""Task status notifications (io.modelcontextprotocol/tasks, "Task Status Notifications"): a
2026-07-28 ``subscriptions/listen`` naming ``taskIds`` is answered with an SSE stream: the
acknowledgement listing the handles this caller may follow, then ``notifications/tasks`` with the
full DetailedTask on every status change, then the ``SubscriptionsListenResult`` once every task
ended. Raw HTTP (httpx), two instances sharing the task key and the mock SysOM.
"""

from __future__ import annotations

import json
import time

import pytest

import support
import tasks_support as ts
from support import Server
from test_mcp_tasks import DIAG_ARGS, KEY1, claims_of, fleet_env, key_dir, seal, start_task

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not ts.available(), reason="mcp 1.x has no client extensions (tasks need mcp 2.x)"),
]

SUB_ID = "io.modelcontextprotocol/subscriptionId"
VERSION = ts.MODERN


def meta(tasks: bool = True) -> dict:
    caps = {"extensions": {ts.TASKS: {}}} if tasks else {}
    return {"io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": caps,
            "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "0"}}


def headers(method: str, name: str | None = None) -> dict:
    import base64
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": VERSION, "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name if name.isascii() and name.isprintable() else \
            "=?base64?" + base64.b64encode(name.encode()).decode() + "?="
    return h


def listen_body(task_ids, rid="sub-1", tasks: bool = True, **filters) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "subscriptions/listen",
            "params": {"_meta": meta(tasks), "notifications": {"taskIds": task_ids, **filters}}}


def events(resp):
    """The JSON messages of an SSE response as they arrive (comments skipped)."""
    data: list[str] = []
    for line in resp.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


def tasks_get(url: str, handle: str) -> dict:
    """tasks/get over raw HTTP (2026-07-28): the result."""
    httpx = support.httpx_module()
    body = {"jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {"_meta": meta(), "taskId": handle}}
    r = httpx.post(url, json=body, headers=headers("tasks/get", handle), timeout=10)
    answer = support.jsonrpc_answer(dict(r.headers), r.content)
    assert "result" in answer, answer
    return answer["result"]


def subscribe(url: str, task_ids, *, timeout: float = 30, stop=None, **kw):
    """Runs a subscription to its end: (status, content type, messages). ``stop(messages)``
    returning true closes the stream early (the client going away)."""
    httpx = support.httpx_module()
    out: list[dict] = []
    with httpx.Client(timeout=timeout) as c, \
            c.stream("POST", url, json=listen_body(task_ids, **kw), headers=headers("subscriptions/listen")) as r:
        ctype = r.headers.get("content-type", "")
        if not ctype.startswith("text/event-stream"):
            r.read()
            return r.status_code, ctype, [r.json()]
        for m in events(r):
            out.append(m)
            if stop is not None and stop(out):
                break
    return r.status_code, ctype, out


def invokes(mock):
    return mock.requests(action="InvokeDiagnosis")


def polls(mock):
    return mock.requests(action="GetDiagnosisResult")


def other_handles(handle: str) -> tuple[str, str, str]:
    """A forged, an expired and a foreign-principal handle shaped like ``handle``."""
    c = claims_of(handle)
    now = int(time.time())
    return (seal("an-attacker-key-0123456789abcdef01234567", c),
            seal(KEY1, dict(c, c=now - 7200, e=now - 60)),
            seal(KEY1, dict(c, p="token:mallory")))


async def test_a_task_made_on_a_is_followed_on_b_to_its_result(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 1.5})
    creds = key_dir(tmp_path, KEY1)
    with Server(fleet_env(mock, creds), ["--stateless"]) as a, Server(fleet_env(mock, creds), ["--stateless"]) as b:
        created = await start_task(a.url)
        handle = created.task_id
        forged, expired, foreign = other_handles(handle)
        status, ctype, msgs = subscribe(b.url, [handle, forged, expired, foreign, handle],
                                        rid="sub-1", toolsListChanged=True)
        final = tasks_get(b.url, handle)
    assert status == 200 and ctype.startswith("text/event-stream"), (status, ctype, msgs)
    ack, *notes, end = msgs
    assert ack["method"] == "notifications/subscriptions/acknowledged", ack
    assert ack["params"]["notifications"] == {"taskIds": [handle]}, "only the real handle, once; no toolsListChanged"
    assert ack["params"]["_meta"] == {SUB_ID: "sub-1"}
    assert notes and all(n["method"] == "notifications/tasks" for n in notes), notes
    assert all(n["params"]["_meta"][SUB_ID] == "sub-1" for n in notes)
    assert all(n["params"]["taskId"] == handle for n in notes)
    statuses = [n["params"]["status"] for n in notes]
    assert statuses[0] == "working" and statuses[-1] == "completed", statuses
    assert statuses.count("completed") == 1
    done = notes[-1]["params"]
    assert done["result"]["structuredContent"]["code"] == "Success", done
    assert done["result"] == final["result"], "the inlined result is what tasks/get answers"
    assert end == {"jsonrpc": "2.0", "id": "sub-1",
                   "result": {"resultType": "complete",
                              "_meta": {SUB_ID: "sub-1",
                                        "io.modelcontextprotocol/serverInfo": end["result"]["_meta"][
                                            "io.modelcontextprotocol/serverInfo"]}}}, end
    assert len(invokes(mock)) == 1


async def test_without_the_extension_the_listen_is_refused_with_32021(mock, tmp_path):
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        status, _, [answer] = subscribe(srv.url, ["x"], tasks=False, rid=12)
        audit = srv.stderr()
    assert status == 400, answer
    assert answer["id"] == 12
    assert answer["error"]["code"] == -32021, answer
    assert answer["error"]["data"] == {"requiredCapabilities": {"extensions": {ts.TASKS: {}}}}
    assert '"SYSOM_SCOPE_DECISION":"denied_capability"' in audit, audit


async def test_too_many_task_ids_is_32602_naming_the_limit(mock, tmp_path):
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        status, _, [answer] = subscribe(srv.url, [f"t{i}" for i in range(65)])
        status_ok, _, msgs = subscribe(srv.url, [f"t{i}" for i in range(64)])
    assert answer["error"]["code"] == -32602, answer
    assert "64" in answer["error"]["message"], answer
    # 64 bogus ids: accepted request, nothing agreed, ends at once.
    assert status_ok == 200 and [m.get("method") for m in msgs] == ["notifications/subscriptions/acknowledged", None]
    assert msgs[0]["params"]["notifications"] == {"taskIds": []}
    assert msgs[1]["result"]["_meta"][SUB_ID] == "sub-1"


async def test_a_cancelled_task_is_notified_cancelled(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 30})
    creds = key_dir(tmp_path, KEY1)
    httpx = support.httpx_module()
    with Server(fleet_env(mock, creds), ["--stateless"]) as a, Server(fleet_env(mock, creds), ["--stateless"]) as b:
        handle = (await start_task(a.url)).task_id

        def cancel_once_working(msgs):
            if msgs[-1].get("method") == "notifications/tasks" and msgs[-1]["params"]["status"] == "working" \
                    and not getattr(cancel_once_working, "sent", False):
                cancel_once_working.sent = True
                body = {"jsonrpc": "2.0", "id": 3, "method": "tasks/cancel",
                        "params": {"_meta": meta(), "taskId": handle}}
                r = httpx.post(b.url, json=body, headers=headers("tasks/cancel", handle), timeout=10)
                assert "result" in support.jsonrpc_answer(dict(r.headers), r.content)
            return False

        started = time.monotonic()
        _, _, msgs = subscribe(b.url, [handle], stop=cancel_once_working)
        took = time.monotonic() - started
    statuses = [m["params"]["status"] for m in msgs if m.get("method") == "notifications/tasks"]
    assert statuses == ["working", "cancelled"], msgs
    assert "result" in msgs[-1], "the stream ends with the listen result"
    assert took < 10, "the cancellation is notified at once, not when SysOM finishes"


async def test_a_client_going_away_stops_the_polls(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 60})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        handle = (await start_task(srv.url)).task_id
        _, _, msgs = subscribe(srv.url, [handle], stop=lambda m: len(m) >= 2)
        assert msgs[1]["params"]["status"] == "working"

        def gauge():
            _, _, body = srv.request("GET", "/metrics")
            line = [ln for ln in body.decode().splitlines()
                    if ln.startswith('sysom_mcp_open_sessions{transport="task_subscription"}')]
            return int(float(line[0].split()[-1])) if line else None

        support.wait_until(lambda: gauge() == 0, 5, what="the subscription to close")
        time.sleep(0.3)
        before = len(polls(mock))
        time.sleep(1.0)
        after = len(polls(mock))
    # 50 ms poll interval: a live subscription would have polled ~20 times in that second.
    assert after == before, f"{after - before} polls after the client left"


async def test_a_server_shutdown_ends_the_stream_with_the_listen_result(mock, tmp_path):
    import signal
    import threading
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 60})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        handle = (await start_task(srv.url)).task_id

        def stop_on_working(msgs):
            if msgs[-1].get("method") == "notifications/tasks" and not getattr(stop_on_working, "sent", False):
                stop_on_working.sent = True
                threading.Timer(0.2, srv.signal, (signal.SIGTERM,)).start()
            return False

        _, _, msgs = subscribe(srv.url, [handle], stop=stop_on_working)
        assert srv.proc.wait(10) == 0
    assert [m.get("method") for m in msgs] == \
        ["notifications/subscriptions/acknowledged", "notifications/tasks", None], msgs
    assert msgs[-1]["result"]["_meta"][SUB_ID] == "sub-1"


async def test_two_subscriptions_of_one_task_share_its_polls(mock, tmp_path):
    """Two subscribers of one diagnosis on one instance: SysOM is polled once per tick."""
    import threading
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 1.5})
    env = fleet_env(mock, key_dir(tmp_path, KEY1), SYSOM_MCP_POLL_INTERVAL_MS="200",
                    SYSOM_MCP_POLL_MAX_INTERVAL_MS="200")
    with Server(env, ["--stateless"]) as srv:
        handle = (await start_task(srv.url)).task_id
        before = len(polls(mock))
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(subscribe(srv.url, [handle]))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        made = len(polls(mock)) - before
    assert [r[2][-2]["params"]["status"] for r in results] == ["completed", "completed"], results
    # ~1.5 s at 200 ms: 8-9 polls for one poller; two pollers would make twice as many.
    assert made <= 11, f"{made} polls for two subscriptions of one diagnosis"


async def test_open_subscriptions_count_as_sessions_and_calls(mock, tmp_path):
    """--max-sessions 1: while one subscription is open a second is refused (503); it counts as
    a call against --max-calls-per-minute too (429)."""
    import threading
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 60})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless", "--max-sessions", "1"]) as srv:
        handle = (await start_task(srv.url)).task_id
        opened, release = threading.Event(), threading.Event()

        def hold(msgs):
            opened.set()
            return release.wait(15)

        first = threading.Thread(target=lambda: subscribe(srv.url, [handle], stop=hold))
        first.start()
        assert opened.wait(10)
        status, _, [answer] = subscribe(srv.url, [handle], rid="sub-2")
        release.set()
        first.join(10)
        support.wait_until(lambda: subscribe(srv.url, [], rid="sub-3")[0] == 200, 5, what="the slot to free")
    assert status == 503, answer
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless", "--max-calls-per-minute", "1"]) as srv:
        assert subscribe(srv.url, [], rid="a")[0] == 200
        status, _, [answer] = subscribe(srv.url, [], rid="b")
    assert status == 429 and answer["id"] == "b", answer


async def test_handles_of_one_diagnosis_keep_their_own_deadlines(mock, tmp_path):
    """Two handles of one SysOM task, the first made 29 s before the other (a coalesced call):
    the first times out at its deadline, the second still gets SysOM's result, though they
    share one poller until the first's deadline."""
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 3})
    with Server(fleet_env(mock, key_dir(tmp_path, KEY1)), ["--stateless"]) as srv:
        late = (await start_task(srv.url)).task_id
        c = claims_of(late)
        early = seal(KEY1, dict(c, c=c["c"] - 29, n="early"))
        _, _, msgs = subscribe(srv.url, [early, late])
    last = {}
    for m in msgs:
        if m.get("method") == "notifications/tasks":
            last[m["params"]["taskId"]] = m["params"]
    assert last[early]["status"] == "completed"
    assert last[early]["result"]["structuredContent"]["code"] == "TaskTimeout", last[early]
    assert last[late]["status"] == "completed", msgs
    assert last[late]["result"]["structuredContent"]["code"] == "Success", last[late]
    assert "result" in msgs[-1]
