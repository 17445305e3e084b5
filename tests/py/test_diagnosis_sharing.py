"""Identical diagnoses in flight share one upstream task; one caller's cancellation leaves the others."""

from __future__ import annotations

import anyio
import pytest

from harness import INSTANCE, UID, payload

pytestmark = pytest.mark.anyio

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}


def invokes(mock) -> list[dict]:
    return mock.requests(action="InvokeDiagnosis")


async def test_identical_concurrent_calls_make_one_upstream_task(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 8})
    results: list[dict] = []

    async def call():
        results.append(payload(await mcp_client.call("memgraph", DIAG_ARGS)))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
    assert [r["code"] for r in results] == ["Success"] * 3
    assert len({r["task_id"] for r in results}) == 1, results
    assert len(invokes(mock)) == 1, "three identical calls must share one InvokeDiagnosis"


async def test_different_arguments_are_not_shared(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 4})
    other = dict(DIAG_ARGS, instance="i-other")
    async with anyio.create_task_group() as tg:
        tg.start_soon(mcp_client.call, "memgraph", DIAG_ARGS)
        tg.start_soon(mcp_client.call, "memgraph", other)
        tg.start_soon(mcp_client.call, "loadtask", DIAG_ARGS)
    assert len(invokes(mock)) == 3


async def test_a_finished_shared_call_is_not_reused(mcp_client, mock):
    """Coalescing is for calls in flight: a later identical call gets a fresh diagnosis."""
    first = payload(await mcp_client.call("memgraph", DIAG_ARGS))
    second = payload(await mcp_client.call("memgraph", DIAG_ARGS))
    assert first["task_id"] != second["task_id"]
    assert len(invokes(mock)) == 2


async def test_one_caller_cancelling_does_not_cancel_the_other(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 9})
    survivor: list[dict] = []

    async def stays():
        survivor.append(payload(await mcp_client.call("memgraph", DIAG_ARGS)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(stays)
        with anyio.move_on_after(0.3) as scope:
            await mcp_client.call("memgraph", DIAG_ARGS)
        assert scope.cancelled_caught
    assert survivor and survivor[0]["code"] == "Success", survivor
    assert len(invokes(mock)) == 1
