"""The ceiling on upstream requests per second holds with many diagnoses in flight, and every one
of them still delivers its result (issue 14; bench/diagnoses.py measures it at 1,000)."""

from __future__ import annotations

import anyio
import pytest

import support
from support import UID, payload

pytestmark = pytest.mark.anyio

CEILING = 10
IN_FLIGHT = 60
# The mock records a request when its thread has read it, a few milliseconds after it was sent;
# windows this much shorter than a second keep that scheduling noise out of the count.
TRANSIT_SLACK = 0.05


def busiest_window(times: list[float], width: float) -> int:
    """The most requests recorded within any `width` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_many_diagnoses_all_finish_under_the_ceiling(mock, tmp_path):
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 1})
    env = support.server_env(mock, SYSOM_MCP_MAX_REQUESTS_PER_SECOND=str(CEILING),
                             SYSOM_MCP_POLL_INTERVAL_MS="200", SYSOM_MCP_DIAGNOSIS_TIMEOUT="300")
    results: dict[int, dict] = {}
    async with support.open_session(env, errlog_path=tmp_path / "stderr.log") as client:

        async def diagnose(i: int) -> None:
            args = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": f"i-ceiling{i:03d}"}
            results[i] = payload(await client.call("loadtask", args, timeout=300))

        async with anyio.create_task_group() as tg:
            for i in range(IN_FLIGHT):
                tg.start_soon(diagnose, i)

    codes = [results[i]["code"] for i in range(IN_FLIGHT)]
    assert codes == ["Success"] * IN_FLIGHT, {c: codes.count(c) for c in set(codes)}
    requests = mock.requests()
    assert len([r for r in requests if r["action"] == "InvokeDiagnosis"]) == IN_FLIGHT
    busiest = busiest_window([r["time"] for r in requests], 1 - TRANSIT_SLACK)
    assert busiest <= CEILING, f"{busiest} upstream requests within one second, ceiling {CEILING}"
