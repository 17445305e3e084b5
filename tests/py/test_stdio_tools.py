"""Every one of the 21 tools over stdio with the real Python MCP client, checked twice:
the MCP result (envelope of sysom-openapi.md §2.3-2.6 with the §2.7 corrections) and the exact
upstream request the mock recorded (action, method, path, query, JSON body, signature).
"""

from __future__ import annotations

import json

import pytest

from support import FIXTURES, INSTANCE, MINIMAL_ARGS, UID, payload
import mock_sysom as ms

pytestmark = pytest.mark.anyio

ORIGINAL = json.loads((FIXTURES / "original-tools.json").read_text())["tools"]
ORIGINAL_BY_NAME = {t["name"]: t for t in ORIGINAL}
PLUGIN_ID = "74a86327-3170-412c-8e67-da3389ec56a9"

# Read-only per MCP semantics: they only list or query. (Diagnoses start remote tasks; activation
# and create_* change state.)
READ_ONLY = {"list_all_instances", "list_pods_of_instance", "list_clusters", "list_instances",
             "query_diagnosis_task", "list_history_tasks", "check_sysom_initialed"}
MUTATING = {"initial_sysom", "create_vmcore_diagnosis_task", "create_dmesg_diagnosis_task"}


def only_request(mock, action: str) -> dict:
    """The single recorded request for action; it must have been correctly signed and answered 200."""
    recs = mock.requests(action=action)
    assert len(recs) == 1, f"expected exactly one {action} request, got {len(recs)}"
    rec = recs[0]
    method, path, _ = ms.OPERATIONS[action]
    assert (rec["method"], rec["path"]) == (method, path)
    assert rec["signature_ok"] is True, rec
    assert rec["status"] == 200, rec
    return rec


def assert_all_signed(mock):
    for rec in mock.requests():
        assert rec["signature_ok"] is True and rec["status"] == 200, rec


def type_set(schema: dict) -> set[str]:
    """The JSON types a (sub)schema admits: "type" string/list, anyOf/oneOf, or nullable."""
    out: set[str] = set()
    t = schema.get("type")
    if isinstance(t, str):
        out.add(t)
    elif isinstance(t, list):
        out.update(t)
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            out |= type_set(sub)
    if schema.get("nullable"):
        out.add("null")
    return out


# ------------------------------------------------------------------ tools/list

HISTORY = {"is_history", "anomaly_start", "anomaly_end"}
# Optional parameters added after the original (issue 11): the original schemas stay a subset.
ADDITIVE = {"delay": HISTORY, "packetdrop": HISTORY, "netjitter": HISTORY, "memgraph": {"profiling_on"}}


async def test_tools_list_matches_original_schemas(mcp_client):
    tools = await mcp_client.list_tools()
    names = [t["name"] for t in tools]
    assert len(names) == 21 and set(names) == set(ORIGINAL_BY_NAME), names
    for tool in tools:
        orig = ORIGINAL_BY_NAME[tool["name"]]["inputSchema"]
        schema = tool["inputSchema"]
        where = tool["name"]
        assert schema.get("type") == "object", where
        added = ADDITIVE.get(where, set())
        assert set(schema["properties"]) == set(orig["properties"]) | added, where
        assert set(schema.get("required", [])) == set(orig.get("required", [])), where
        for prop in added:
            assert type_set(schema["properties"][prop]) >= {"null"}, f"{where}.{prop} must be optional"
        for prop, spec in orig["properties"].items():
            got = schema["properties"][prop]
            assert type_set(got) == type_set(spec), f"{where}.{prop}: {got}"
            if spec.get("default") is not None:
                assert got.get("default") == spec["default"], f"{where}.{prop} default"
            else:
                assert got.get("default") is None, f"{where}.{prop} default should be null/absent"
            for bound in ("minimum", "maximum"):
                if bound in spec:
                    assert got.get(bound) == spec[bound], f"{where}.{prop} {bound}"
        assert tool.get("description"), where


async def test_tools_have_output_schemas_and_annotations(mcp_client):
    tools = {t["name"]: t for t in await mcp_client.list_tools()}
    for name, tool in tools.items():
        if name not in ("initial_sysom", "check_sysom_initialed"):
            out = tool.get("outputSchema")
            assert out and out.get("type") == "object" and out.get("properties"), f"{name} lacks outputSchema"
        hints = tool.get("annotations") or {}
        if name in READ_ONLY:
            assert hints.get("readOnlyHint") is True, f"{name} should be readOnlyHint"
        if name in MUTATING:
            assert hints.get("readOnlyHint") is not True, f"{name} must not be readOnlyHint"


# ------------------------------------------------------------------ AM tools (§2.3, corrected)


async def test_list_all_instances_defaults(mcp_client, mock):
    mock.scenario(responses={"ListAllInstances": {"requestId": "RID-lai-1", "nextToken": "n2", "total": 42}})
    res = await mcp_client.call("list_all_instances", {"uid": UID})
    assert res["isError"] is False
    out = payload(res)
    assert out["code"] == "Success"
    assert out["data"] == ms.DEFAULT_DATA["ListAllInstances"]["data"]
    assert (out["total"], out["nextToken"], out["maxResults"], out["requestId"]) == (42, "n2", 100, "RID-lai-1")
    rec = only_request(mock, "ListAllInstances")
    # Defaults are forwarded; managedType and uid never are; nulls are not sent.
    assert rec["query"] == {"instanceType": "ecs", "pluginId": PLUGIN_ID, "current": "1", "pageSize": "10",
                            "maxResults": "100"}
    assert rec["body"] == ""


async def test_list_all_instances_all_arguments(mcp_client, mock):
    filters = json.dumps([{"infoType": "instance_id_name", "infoValue": "i-1, 我的机器*"},
                          {"infoType": "instance_tag", "infoKey": "env", "infoValue": "prod/blue"}],
                         ensure_ascii=False)
    args = {"uid": UID, "region": "cn-shanghai", "managedType": "managed", "instanceType": "ecs",
            "pluginId": "p-1", "filters": filters, "current": "2", "pageSize": "20", "maxResults": 50,
            "nextToken": "tok+/=="}
    out = payload(await mcp_client.call("list_all_instances", args))
    assert out["code"] == "Success"
    rec = only_request(mock, "ListAllInstances")
    assert rec["query"] == {"region": "cn-shanghai", "instanceType": "ecs", "pluginId": "p-1", "filters": filters,
                            "current": "2", "pageSize": "20", "maxResults": "50", "nextToken": "tok+/=="}


async def test_list_instances(mcp_client, mock):
    mock.scenario(responses={"ListInstances": {"request_id": "RID-li-1"}})
    args = {"uid": UID, "instance": INSTANCE, "status": "Running", "region": "cn-hangzhou",
            "cluster_id": "c-1", "current": 2, "pageSize": 5}
    out = payload(await mcp_client.call("list_instances", args))
    assert out["code"] == "Success" and out["request_id"] == "RID-li-1"
    assert out["data"] == ms.DEFAULT_DATA["ListInstances"]["data"] and out["total"] == 1
    rec = only_request(mock, "ListInstances")
    assert rec["query"] == {"instance": INSTANCE, "status": "Running", "region": "cn-hangzhou",
                            "cluster_id": "c-1", "current": "2", "pageSize": "5"}


async def test_list_instances_defaults_and_explicit_null(mcp_client, mock):
    out = payload(await mcp_client.call("list_instances", {"uid": UID, "status": None, "region": None}))
    assert out["code"] == "Success"
    assert only_request(mock, "ListInstances")["query"] == {"current": "1", "pageSize": "10"}


async def test_list_clusters(mcp_client, mock):
    mock.scenario(responses={"ListClusters": {"RequestId": "RID-lc-1"}})
    args = {"uid": UID, "name": "prod cluster", "cluster_id": "c-sysom-0001", "cluster_type": "ACK",
            "cluster_status": "Running"}
    out = payload(await mcp_client.call("list_clusters", args))
    assert out["code"] == "Success" and out["RequestId"] == "RID-lc-1"
    assert out["data"] == ms.DEFAULT_DATA["ListClusters"]["data"] and out["total"] == 1
    rec = only_request(mock, "ListClusters")
    assert rec["query"] == {"name": "prod cluster", "cluster_id": "c-sysom-0001", "cluster_type": "ACK",
                            "cluster_status": "Running", "current": "1", "pageSize": "10"}


async def test_list_pods_of_instance(mcp_client, mock):
    mock.scenario(responses={"ListPodsOfInstance": {"RequestId": "RID-lp-1"}})
    out = payload(await mcp_client.call("list_pods_of_instance",
                                        {"uid": UID, "instance": INSTANCE, "cluster_id": "c-1", "pageSize": 50}))
    assert out["code"] == "Success" and out["RequestId"] == "RID-lp-1"
    assert out["data"] == ms.DEFAULT_DATA["ListPodsOfInstance"]["data"] and out["total"] == 2
    rec = only_request(mock, "ListPodsOfInstance")
    assert rec["query"] == {"instance": INSTANCE, "cluster_id": "c-1", "current": "1", "pageSize": "50"}


# ------------------------------------------------------------------ diagnosis tools (§2.4)

DIAGNOSIS_CASES = [
    # (tool, tool-specific arguments, channel, expected params fields besides region/_hide/marker)
    ("memgraph", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE}),
    ("memgraph", {"instance": INSTANCE, "pod": None}, "ecs", {"instance": INSTANCE}),
    ("memgraph", {"clusterType": "ackClusters", "clusterId": "c8d1", "namespace": "default", "pod": "web-1"},
     "auto", {"clusterType": "ackClusters", "clusterId": "c8d1", "namespace": "default", "pod": "web-1"}),
    ("javamem", {"instance": INSTANCE, "pid": "1234"}, "ecs", {"instance": INSTANCE, "Pid": "1234", "duration": "0"}),
    ("javamem", {"instance": INSTANCE, "pod": "java-0", "duration": "30"}, "ecs",
     {"instance": INSTANCE, "pod": "java-0", "duration": "30"}),
    ("oomcheck", {"instance": INSTANCE, "time": "1767225600"}, "ecs", {"instance": INSTANCE, "time": "1767225600"}),
    ("iofsstat", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE, "timeout": "15"}),
    ("iofsstat", {"instance": INSTANCE, "timeout": "", "disk": "vda"}, "ecs",
     {"instance": INSTANCE, "timeout": "15", "disk": "vda"}),
    ("iodiagnose", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE, "timeout": "30"}),
    ("iodiagnose", {"instance": INSTANCE, "timeout": "60"}, "ecs", {"instance": INSTANCE, "timeout": "60"}),
    ("packetdrop", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE}),
    ("netjitter", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE}),
    ("netjitter", {"instance": INSTANCE, "duration": "10"}, "ecs", {"instance": INSTANCE, "duration": "10"}),
    ("delay", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE}),
    ("delay", {"instance": INSTANCE, "duration": "5", "threshold": "30"}, "ecs",
     {"instance": INSTANCE, "duration": "5", "threshold": "30"}),
    ("loadtask", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE}),
    ("vmcore", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE}),
    ("diskanalysis", {"instance": INSTANCE}, "ecs", {"instance": INSTANCE}),
    # The limits SysOM documents, at the limit (issue 11); eflo besides ecs/auto.
    ("iofsstat", {"instance": INSTANCE, "timeout": "30"}, "eflo", {"instance": INSTANCE, "timeout": "30"}),
    ("iodiagnose", {"instance": INSTANCE, "timeout": "300"}, "eflo", {"instance": INSTANCE, "timeout": "300"}),
    ("loadtask", {"instance": INSTANCE}, "eflo", {"instance": INSTANCE}),
    # History mode and memgraph profiling: optional, additive parameters.
    ("delay", {"instance": INSTANCE, "duration": "60", "is_history": True, "anomaly_start": "1767225600",
               "anomaly_end": "1767229200"}, "ecs",
     {"instance": INSTANCE, "duration": "60", "is_history": 1, "anomaly_start": "1767225600",
      "anomaly_end": "1767229200"}),
    ("packetdrop", {"instance": INSTANCE, "is_history": True, "anomaly_start": "1767225600"}, "ecs",
     {"instance": INSTANCE, "is_history": True, "anomaly_start": "1767225600"}),
    ("netjitter", {"instance": INSTANCE, "is_history": False, "anomaly_end": "1767229200"}, "ecs",
     {"instance": INSTANCE, "is_history": False, "anomaly_end": "1767229200"}),
    ("memgraph", {"instance": INSTANCE, "profiling_on": True}, "ecs", {"instance": INSTANCE, "profiling_on": True}),
]


@pytest.mark.parametrize("tool,args,channel,expected", DIAGNOSIS_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(DIAGNOSIS_CASES)])
async def test_diagnosis_tool(mcp_client, mock, tool, args, channel, expected):
    result = {"summary": f"{tool} ok", "items": [{"name": "x", "value": 1}]}
    mock.scenario(diagnosis={"polls_before_done": 1, "final": "Success", "result": result})
    res = await mcp_client.call(tool, {"uid": UID, "region": "cn-beijing", "channel": channel, **args})
    assert res["isError"] is False
    out = payload(res)
    assert out["code"] == "Success", out
    assert out["result"] == result

    inv = only_request(mock, "InvokeDiagnosis")
    assert inv["headers"]["content-type"].startswith("application/json")
    assert set(inv["json"]) == {"channel", "params", "service_name"}
    assert (inv["json"]["service_name"], inv["json"]["channel"]) == (tool, channel)
    assert isinstance(inv["json"]["params"], str)
    # The marker SysOM expects now; the old "source" key is stripped by its gateway (issue 11).
    assert json.loads(inv["json"]["params"]) == {"region": "cn-beijing", "_hide": "0",
                                                 "__sysom_diagnosis_source": "mcp", **expected}

    polls = mock.requests(action="GetDiagnosisResult")
    task_ids = {p["query"]["task_id"] for p in polls}
    assert len(task_ids) == 1 and out["task_id"] == task_ids.pop()
    assert all(p["query"] == {"task_id": out["task_id"]} for p in polls)
    assert len(polls) == 2, "one Running answer, then Success; no polling after the result"
    assert_all_signed(mock)


LIMIT_CASES = [
    ("iofsstat", "timeout", "31", "30"),
    ("iodiagnose", "timeout", "301", "300"),
    ("delay", "duration", "61", "60"),
    ("netjitter", "duration", "120", "60"),
    ("iofsstat", "timeout", "soon", "30"),
]


@pytest.mark.parametrize("tool,field,value,limit", LIMIT_CASES, ids=[f"{c[0]}-{c[2]}" for c in LIMIT_CASES])
async def test_diagnosis_limits_are_argument_errors(mcp_client, mock, tool, field, value, limit):
    """Over a SysOM service limit: a tool error naming the argument and the limit, instead of
    SysOM silently clamping it (issue 11). Nothing reaches SysOM."""
    res = await mcp_client.call(tool, {"uid": UID, "region": "cn-beijing", "channel": "ecs",
                                       "instance": INSTANCE, field: value})
    assert res["isError"] is True, res
    text = res["content"][0]["text"]
    assert f"`{field}`" in text and limit in text, text
    assert mock.requests() == []


async def test_unknown_channel_is_an_argument_error(mcp_client, mock):
    res = await mcp_client.call("loadtask", {"uid": UID, "region": "cn-beijing", "channel": "vm",
                                             "instance": INSTANCE})
    assert res["isError"] is True
    text = res["content"][0]["text"]
    assert "`channel`" in text and "eflo" in text, text
    assert mock.requests() == []


# ------------------------------------------------------------------ crash-agent tools (§2.5)


async def test_create_vmcore_diagnosis_task(mcp_client, mock):
    mock.scenario(responses={"CreateVmcoreDiagnosisTask": {"data": {"taskId": "vmcore-fixed-1"}}})
    out = payload(await mcp_client.call("create_vmcore_diagnosis_task",
                                        {"vmcore_url": "https://oss.example.invalid/vmcore?a=1&b=2"}))
    assert out["code"] == "Success" and isinstance(out["message"], str)
    assert out["data"] == {"taskId": "vmcore-fixed-1"}
    rec = only_request(mock, "CreateVmcoreDiagnosisTask")
    assert rec["json"] == {"taskType": "vmcore", "vmcoreUrl": "https://oss.example.invalid/vmcore?a=1&b=2"}
    assert rec["raw_query"] == ""


async def test_create_vmcore_diagnosis_task_with_debuginfo(mcp_client, mock):
    args = {"vmcore_url": "https://x.invalid/vmcore", "debuginfo_url": "https://x.invalid/vmlinux",
            "debuginfo_common_url": "https://x.invalid/common"}
    out = payload(await mcp_client.call("create_vmcore_diagnosis_task", args))
    assert out["code"] == "Success" and out["data"]["taskId"].startswith("vmcore-")
    assert only_request(mock, "CreateVmcoreDiagnosisTask")["json"] == {
        "taskType": "vmcore", "vmcoreUrl": "https://x.invalid/vmcore", "debuginfoUrl": "https://x.invalid/vmlinux",
        "debuginfoCommonUrl": "https://x.invalid/common"}


async def test_create_dmesg_diagnosis_task(mcp_client, mock):
    out = payload(await mcp_client.call("create_dmesg_diagnosis_task", {"dmesg_url": "https://x.invalid/dmesg"}))
    assert out["code"] == "Success" and out["data"]["taskId"].startswith("dmesg-")
    assert only_request(mock, "CreateVmcoreDiagnosisTask")["json"] == {"taskType": "dmesg",
                                                                        "dmesgUrl": "https://x.invalid/dmesg"}


async def test_query_diagnosis_task(mcp_client, mock):
    out = payload(await mcp_client.call("query_diagnosis_task", {"task_id": "vmcore-abc 1"}))
    assert out["code"] == "Success"
    expected = dict(ms.DEFAULT_DATA["GetVmcoreDiagnosisTask"]["data"], taskId="vmcore-abc 1")
    assert out["data"] == expected
    assert only_request(mock, "GetVmcoreDiagnosisTask")["query"] == {"taskId": "vmcore-abc 1"}


async def test_list_history_tasks(mcp_client, mock):
    out = payload(await mcp_client.call("list_history_tasks", {"days": 7}))
    assert out["code"] == "Success"
    assert out["data"] == ms.DEFAULT_DATA["ListVmcoreDiagnosisTask"]["data"]
    assert only_request(mock, "ListVmcoreDiagnosisTask")["query"] == {"days": "7"}


# ------------------------------------------------------------------ activation tools (§2.6, corrected)


async def test_initial_sysom(mcp_client, mock):
    out = payload(await mcp_client.call("initial_sysom", {"uid": UID}))
    assert out["code"] == "Success", out
    assert only_request(mock, "InitialSysom")["json"] == {"check_only": False, "source": "mcp"}


async def test_check_sysom_initialed_then_cached(mcp_client, mock):
    out = payload(await mcp_client.call("check_sysom_initialed", {"uid": UID}))
    assert out["code"] == "Success" and out["data"]["initialed"] is True, out
    assert only_request(mock, "InitialSysom")["json"] == {"check_only": True, "source": "mcp"}
    again = payload(await mcp_client.call("check_sysom_initialed", {"uid": UID}))
    assert again["code"] == "Success" and again["data"]["initialed"] is True
    assert again["data"].get("from_cache") is True
    assert len(mock.requests(action="InitialSysom")) == 1, "second check must come from the cache"


async def test_check_sysom_not_activated_is_not_cached(mcp_client, mock):
    mock.scenario(role_exist=False)
    out = payload(await mcp_client.call("check_sysom_initialed", {"uid": UID}))
    assert out["code"] != "Success" and out["data"]["initialed"] is False, out
    # Not activated is not cached: the next check asks again.
    payload(await mcp_client.call("check_sysom_initialed", {"uid": UID}))
    assert len(mock.requests(action="InitialSysom")) == 2
    # Activating caches "activated" for this uid.
    assert payload(await mcp_client.call("initial_sysom", {"uid": UID}))["code"] == "Success"
    after = payload(await mcp_client.call("check_sysom_initialed", {"uid": UID}))
    assert after["code"] == "Success" and after["data"]["initialed"] is True
    assert len(mock.requests(action="InitialSysom")) == 3


async def test_every_tool_succeeds_with_minimal_arguments(mcp_client, mock):
    """Smoke: each of the 21 tools, called once with only its required arguments, reports Success."""
    for name, args in MINIMAL_ARGS.items():
        res = await mcp_client.call(name, args)
        out = payload(res)
        assert res["isError"] is False and out["code"] == "Success", (name, out)
    assert_all_signed(mock)
