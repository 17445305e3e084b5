"""The local diagnosis tools on the live host, over stdio with the real Python MCP client and no
cloud credentials: what a fresh machine sees. Every tool succeeds, and the headline figures
agree with what the kernel reports when read independently here:

* MemTotal: exactly (it does not change while the host runs);
* load average (1 min): within 2.0 absolute, since it moves between the two reads;
* size of the root file system: within 1 % (statvfs here vs the tool's), as other helpers may
  be writing to the same disk.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from support import MCP_MAJOR, open_session, payload, server_env

pytestmark = pytest.mark.anyio

LOCAL_TOOLS = {"local_triage", "local_memgraph", "local_oomcheck", "local_loadtask", "local_delay",
               "local_iofsstat", "local_iodiagnose", "local_packetdrop", "local_netjitter",
               "local_disk", "local_crash"}
SAMPLED = {"local_delay", "local_iofsstat", "local_iodiagnose", "local_packetdrop", "local_netjitter"}
SEVERITIES = {"info", "unavailable", "warning", "critical"}


def no_credentials(mock):
    env = server_env(mock, credentials=False)
    env.pop("SYSOM_MCP_TOOLS", None)  # the default listing
    return env


def kernel_meminfo_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


async def test_credential_less_server_lists_working_local_tools(mock, config_file):
    async with open_session(no_credentials(mock), config=config_file) as client:
        tools = {t["name"]: t for t in await client.list_tools()}
        assert set(tools) == LOCAL_TOOLS
        for t in tools.values():
            ann = t["annotations"]
            assert ann["readOnlyHint"] is True and ann["openWorldHint"] is False, t["name"]
            props = t["inputSchema"].get("properties", {})
            assert not {"uid", "region", "instance"} & set(props), t["name"]
            assert t["outputSchema"]["type"] == "object"


async def test_every_local_tool_succeeds_with_findings(mock, config_file):
    async with open_session(no_credentials(mock), config=config_file) as client:
        for name in sorted(LOCAL_TOOLS):
            args = {"duration": 1} if name in SAMPLED else {}
            res = await client.call(name, args, timeout=30)
            assert res["isError"] is False, res
            body = payload(res)
            assert body["code"] == "Success", (name, body["message"])
            assert body["data"]["tool"] == name and body["data"]["root"] == "/"
            findings = body["result"]["findings"]
            assert findings, name
            for f in findings:
                assert f["severity"] in SEVERITIES and f["title"] and f["source"], f
            assert isinstance(body["result"]["figures"], dict)
            assert isinstance(body["result"]["next_steps"], list)


async def test_headline_figures_agree_with_the_kernel(mock, config_file):
    async with open_session(no_credentials(mock), config=config_file) as client:
        mem = payload(await client.call("local_memgraph"))["result"]["figures"]
        assert mem["meminfo"]["total"] == kernel_meminfo_total()
        load = payload(await client.call("local_loadtask"))["result"]["figures"]
        assert abs(load["load1"] - os.getloadavg()[0]) <= 2.0, (load["load1"], os.getloadavg())
        assert load["cpus"] == os.cpu_count()
        disk = payload(await client.call("local_disk"))["result"]["figures"]
        root = next(fs for fs in disk["filesystems"] if fs["mountpoint"] == "/")
        st = os.statvfs("/")
        assert abs(root["size"] - st.f_blocks * st.f_frsize) <= 0.01 * st.f_blocks * st.f_frsize
        triage = payload(await client.call("local_triage"))["result"]
        assert triage["figures"]["mem_total"] == kernel_meminfo_total()
        assert all(s["tool"].startswith("local_") for s in triage["next_steps"])


@pytest.mark.xfail(
    MCP_MAJOR < 2,
    reason="mcp 1.x's stdio reader raises BrokenResourceError at teardown when a message of the "
    "cancelled call arrives after the session closed (seen once in CI); not yet investigated",
    strict=False,
)
async def test_sampling_reports_progress_and_stops_on_cancel(mock, config_file):
    async with open_session(no_credentials(mock), config=config_file) as client:
        seen = []

        async def progress(done, total, message):
            seen.append((done, total, message))

        res = await client.call("local_iofsstat", {"duration": 2}, progress=progress, timeout=30)
        assert payload(res)["code"] == "Success"
        assert seen and seen[-1][1] == 2.0, seen
        # A window longer than the test is cancelled by the client; the server stays usable.
        task = asyncio.ensure_future(client.call("local_delay", {"duration": 60}, timeout=120))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(BaseException):
            await task
        again = await client.call("local_memgraph", timeout=20)
        assert payload(again)["code"] == "Success"


async def test_out_of_range_duration_is_bounded(mock, config_file):
    async with open_session(no_credentials(mock), config=config_file) as client:
        res = await client.call("local_packetdrop", {"duration": 0}, timeout=20)
        body = payload(res)
        assert body["code"] == "Success" and body["result"]["figures"]["window_s"] >= 1.0
        bad = await client.call("local_oomcheck", {"region": "cn-hangzhou"})
        assert bad["isError"] is True and "region" in bad["content"][0]["text"]


async def test_with_credentials_both_sets_are_listed(mock, config_file):
    env = server_env(mock)
    env.pop("SYSOM_MCP_TOOLS", None)
    async with open_session(env, config=config_file) as client:
        names = {t["name"] for t in await client.list_tools()}
        assert LOCAL_TOOLS <= names and len(names) == 21 + len(LOCAL_TOOLS)
