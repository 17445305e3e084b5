"""Tests of the mock SysOM server itself (no sysom-mcp binary needed).

The requests here are signed by a tiny signer written independently of the mock's verifier, so
a bug shared by both is unlikely; the verifier's building blocks are also checked against the two
official ACS3-HMAC-SHA256 vectors (sysom-openapi.md §3.2).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import sys
import time
import uuid
from urllib.parse import quote

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mock_sysom as ms  # noqa: E402
from control import MockSysom  # noqa: E402

AKID, SECRET = "AKIDtestmock", "test-secret-value"


# ------------------------------------------------------------------ official vectors


def _official_request(date: str, nonce: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    query = "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai"
    headers = [("host", "ecs.cn-shanghai.aliyuncs.com"), ("x-acs-action", "RunInstances"),
               ("x-acs-content-sha256", ms.EMPTY_SHA256), ("x-acs-date", date),
               ("x-acs-signature-nonce", nonce), ("x-acs-version", "2014-05-26")]
    return query, [h for h, _ in headers], headers


def test_official_vector_1():
    query, signed, headers = _official_request("2023-10-26T10:22:32Z", "3156853299f313e23d1673dc12e1703d")
    canonical = ms.canonical_request("POST", "/", query, headers, signed, ms.EMPTY_SHA256)
    assert canonical == (
        "POST\n/\n"
        "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n"
        "host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n"
        f"x-acs-content-sha256:{ms.EMPTY_SHA256}\nx-acs-date:2023-10-26T10:22:32Z\n"
        "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\nx-acs-version:2014-05-26\n\n"
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n"
        + ms.EMPTY_SHA256)
    to_sign = ms.string_to_sign(canonical)
    assert to_sign == "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    assert ms.signature("YourAccessKeySecret", to_sign) == \
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"


def test_official_vector_2():
    query, signed, headers = _official_request("2023-10-26T09:01:01Z", "d410180a5abf7fe235dd9b74aca91fc0")
    to_sign = ms.string_to_sign(ms.canonical_request("POST", "/", query, headers, signed, ms.EMPTY_SHA256))
    assert ms.signature("YourAccessKeySecret", to_sign) == \
        "e521358f7776c97df52e6b2891a8bc73026794a071b50c3323388c4e0df64804"


def test_canonical_query_normalises_wire_encoding():
    # "+" and %20 both decode to a space and re-encode as %20; "*" and "/" are escaped, "~" kept.
    raw = "b=x+y&a=%5B%7B%22k%22%3A1%7D%5D&c=a%20b*c~d/e"
    assert ms.canonical_query_from_raw(raw) == "a=%5B%7B%22k%22%3A1%7D%5D&b=x%20y&c=a%20b%2Ac~d%2Fe"
    assert ms.canonical_query_from_raw("") == ""


# ------------------------------------------------------------------ independent signer


def sign_request(method, path, query=None, body=None, akid=AKID, secret=SECRET, action="ListClusters",
                 host="127.0.0.1", token=None, date=None, nonce=None, version="2023-12-30",
                 skip_sign=(), tamper=None):
    """Return (path_with_query, headers, body_bytes) signed with ACS3-HMAC-SHA256."""
    body_bytes = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    digest = hashlib.sha256(body_bytes).hexdigest()
    headers = {
        "host": host, "x-acs-action": action, "x-acs-version": version,
        "x-acs-date": date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex, "x-acs-content-sha256": digest,
        "accept": "application/json",
    }
    if body is not None:
        headers["content-type"] = "application/json; charset=utf-8"
    if token:
        headers["x-acs-security-token"] = token
    enc = lambda s: quote(str(s), safe="-_.~")  # noqa: E731
    q = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted((query or {}).items()))
    names = sorted(n for n in headers if n not in skip_sign)
    lines = "".join(f"{n}:{headers[n].strip()}\n" for n in names)
    creq = f"{method}\n{path}\n{q}\n{lines}\n{';'.join(names)}\n{digest}"
    sts = "ACS3-HMAC-SHA256\n" + hashlib.sha256(creq.encode()).hexdigest()
    sig = hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = f"ACS3-HMAC-SHA256 Credential={akid},SignedHeaders={';'.join(names)},Signature={sig}"
    if tamper:
        tamper(headers)
    return (path + ("?" + q if q else "")), headers, body_bytes


@pytest.fixture(scope="module")
def mock():
    m = MockSysom(access_key_id=AKID, access_key_secret=SECRET)
    yield m
    m.stop()


@pytest.fixture(autouse=True)
def _reset(mock):
    mock.reset()


def send(mock, method, path, query=None, body=None, raw=False, **kw):
    target, headers, data = sign_request(method, path, query, body, host=f"127.0.0.1:{mock.port}", **kw)
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    conn.request(method, target, body=data or None, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    return resp.status, (text if raw else json.loads(text))


def op(action):
    method, path, _ = ms.OPERATIONS[action]
    return method, path


# ------------------------------------------------------------------ signature acceptance


def test_valid_signed_get_is_accepted_and_recorded(mock):
    status, body = send(mock, *op("ListClusters"), query={"name": "a b/c", "current": 1, "pageSize": 10})
    assert status == 200, body
    assert body["code"] == "Success" and "RequestId" in body and body["data"][0]["cluster_type"] == "ACK"
    [rec] = mock.requests()
    assert rec["action"] == "ListClusters" and rec["signature_ok"] is True and rec["status"] == 200
    assert rec["query"] == {"name": "a b/c", "current": "1", "pageSize": "10"}


def test_client_port_identifies_the_connection(mock):
    """Two requests on one keep-alive connection share a client_port; a new connection differs."""
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    for _ in range(2):
        target, headers, _ = sign_request(*op("ListClusters"), host=f"127.0.0.1:{mock.port}")
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and not resp.will_close
    conn.close()
    assert send(mock, *op("ListClusters"))[0] == 200
    ports = [r["client_port"] for r in mock.requests()]
    assert len(ports) == 3 and all(isinstance(p, int) for p in ports)
    assert ports[0] == ports[1] != ports[2]


def test_valid_signed_post_is_accepted(mock):
    status, body = send(mock, *op("InitialSysom"), body={"check_only": True, "source": "mcp"},
                        action="InitialSysom")
    assert status == 200, body
    assert body["data"] == {"role_exist": True} and "RequestId" in body
    assert mock.requests()[0]["json"] == {"check_only": True, "source": "mcp"}


def test_plus_encoded_space_is_accepted(mock):
    # A client that sends "+" on the wire but signs %20 must still verify (gateway normalises).
    target, headers, _ = sign_request("GET", "/api/v1/am/cluster/list_clusters", {"name": "a b"},
                                      host=f"127.0.0.1:{mock.port}")
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    conn.request("GET", target.replace("%20", "+"), headers=headers)
    assert conn.getresponse().status == 200


@pytest.mark.parametrize("kw,status,code", [
    ({"secret": "wrong"}, 400, "IncompleteSignature"),
    ({"akid": "AKIDunknown"}, 404, "InvalidAccessKeyId.NotFound"),
    ({"skip_sign": ("host",)}, 400, "IncompleteSignature"),
    ({"skip_sign": ("x-acs-signature-nonce",)}, 400, "IncompleteSignature"),
    ({"date": "2020-01-01T00:00:00Z"}, 400, "InvalidTimeStamp.Expired"),
    ({"date": "yesterday"}, 400, "InvalidTimeStamp.Format"),
    ({"version": "2022-01-01"}, 400, "InvalidVersion"),
    ({"tamper": lambda h: h.pop("x-acs-date")}, 400, "MissingParameter"),
    ({"tamper": lambda h: h.pop("authorization")}, 400, "MissingAuthorization"),
    ({"tamper": lambda h: h.update({"authorization": "ACS3-HMAC-SHA256 garbage"})}, 400, "IncompleteSignature"),
    ({"tamper": lambda h: h.update({"x-acs-content-sha256": ms.EMPTY_SHA256[::-1]})}, 400, "IncompleteSignature"),
    ({"action": "ListInstances"}, 404, "InvalidAction.NotFound"),  # action does not match the path
    ({"action": "NoSuchAction"}, 404, "InvalidAction.NotFound"),
])
def test_rejections(mock, kw, status, code):
    got_status, body = send(mock, *op("ListClusters"), query={"current": 1}, **kw)
    assert (got_status, body["Code"]) == (status, code), body
    assert body["RequestId"] and body["Message"]
    if code == "IncompleteSignature":
        assert body["Message"].startswith("The request signature does not conform to Aliyun standards.")
    [rec] = mock.requests()
    assert rec["status"] == status and rec["error_code"] == code


def test_body_hash_must_match_body(mock):
    target, headers, data = sign_request("POST", ms.OPERATIONS["InitialSysom"][1], body={"check_only": True},
                                         action="InitialSysom", host=f"127.0.0.1:{mock.port}")
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    conn.request("POST", target, body=data.replace(b"true", b"false"), headers=headers)
    resp = conn.getresponse()
    assert resp.status == 400 and json.loads(resp.read())["Code"] == "IncompleteSignature"


def test_content_type_must_be_signed(mock):
    status, body = send(mock, *op("InitialSysom"), body={"check_only": True}, action="InitialSysom",
                        skip_sign=("content-type",))
    assert (status, body["Code"]) == (400, "IncompleteSignature") and "content-type" in body["Message"]


def test_reused_nonce_rejected(mock):
    assert send(mock, *op("ListClusters"), nonce="fixed-nonce-1")[0] == 200
    status, body = send(mock, *op("ListClusters"), nonce="fixed-nonce-1")
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")


def test_security_token_required_when_configured(mock):
    mock.scenario(security_token="tok-123")
    status, body = send(mock, *op("ListClusters"))
    assert (status, body["Code"]) == (403, "InvalidSecurityToken.Mismatch")
    status, body = send(mock, *op("ListClusters"), token="tok-wrong")
    assert (status, body["Code"]) == (403, "InvalidSecurityToken.Mismatch")
    assert send(mock, *op("ListClusters"), token="tok-123")[0] == 200


def test_security_token_from_cli():
    with MockSysom(access_key_id="AK2", access_key_secret="S2", security_token="tok-cli") as m:
        s1, _ = send(m, *op("ListClusters"), akid="AK2", secret="S2")
        s2, _ = send(m, *op("ListClusters"), akid="AK2", secret="S2", token="tok-cli")
    assert (s1, s2) == (403, 200)


# ------------------------------------------------------------------ operations and validation


@pytest.mark.parametrize("action,query,body,rid_key", [
    ("ListAllInstances", {"instanceType": "ecs", "filters": '[{"infoType":"ip","infoValue":"1.2.3.4"}]',
                          "maxResults": 100}, None, "requestId"),
    ("ListInstances", {"current": 1, "pageSize": 10}, None, "request_id"),
    ("ListPodsOfInstance", {"instance": "i-1"}, None, "RequestId"),
    ("GetVmcoreDiagnosisTask", {"taskId": "t-1"}, None, "requestId"),
    ("ListVmcoreDiagnosisTask", {"days": 3}, None, "requestId"),
    ("CreateVmcoreDiagnosisTask", None, {"taskType": "dmesg", "dmesgUrl": "https://x/d"}, "requestId"),
])
def test_operation_request_id_keys(mock, action, query, body, rid_key):
    status, out = send(mock, *op(action), query=query, body=body, action=action)
    assert status == 200, out
    assert out["code"] == "Success" and isinstance(out[rid_key], str)
    for other in {"requestId", "request_id", "RequestId"} - {rid_key}:
        assert other not in out


@pytest.mark.parametrize("action,query,body,code", [
    ("ListVmcoreDiagnosisTask", {"days": 0}, None, "InvalidParameter"),
    ("ListVmcoreDiagnosisTask", {"days": 31}, None, "InvalidParameter"),
    ("ListVmcoreDiagnosisTask", {}, None, "MissingParameter"),
    ("GetDiagnosisResult", {}, None, "MissingParameter"),
    ("GetVmcoreDiagnosisTask", {}, None, "MissingParameter"),
    ("ListInstances", {"pageSize": "abc"}, None, "InvalidParameter"),
    ("ListAllInstances", {"filters": "not json"}, None, "InvalidParameter"),
    ("InvokeDiagnosis", None, {"service_name": "memgraph", "channel": "ecs",
                               "params": {"region": "cn-hangzhou"}}, "MissingParameter"),  # params not a string
    ("InvokeDiagnosis", None, {"service_name": "memgraph", "channel": "ecs", "params": "{"}, "InvalidParameter"),
    ("InvokeDiagnosis", None, {"service_name": "nope", "channel": "ecs",
                               "params": '{"region":"cn-hangzhou"}'}, "InvalidParameter"),
    ("CreateVmcoreDiagnosisTask", None, {"taskType": "vmcore"}, "MissingParameter"),
    ("InitialSysom", None, {"check_only": "yes"}, "InvalidParameter"),
])
def test_operation_validation(mock, action, query, body, code):
    status, out = send(mock, *op(action), query=query, body=body, action=action)
    assert (status, out["Code"]) == (400, code), out


def invoke(mock, service="memgraph", channel="ecs", **extra):
    status, out = send(mock, *op("InvokeDiagnosis"), action="InvokeDiagnosis", body={
        "channel": channel, "service_name": service,
        "params": json.dumps({"region": "cn-hangzhou", "_hide": "0", "instance": "i-1",
                              "__sysom_diagnosis_source": "mcp", **extra})})
    assert status == 200, out
    assert out["code"] == "Success" and "request_id" in out
    return out["data"]["task_id"]


def test_invoke_strips_old_markers_clamps_limits_and_takes_eflo(mock):
    """As the SysOM backend: the old "source" marker is stripped, over-limit values are silently
    clamped (why sysom-mcp rejects them first), and eflo is a channel."""
    task = invoke(mock, "iofsstat", channel="eflo", timeout="45", source="mcp")
    params = mock.state()["tasks"][task]["params"]
    assert "source" not in params and params["__sysom_diagnosis_source"] == "mcp"
    assert params["timeout"] == "30"
    task = invoke(mock, "iodiagnose", timeout="301")
    assert mock.state()["tasks"][task]["params"]["timeout"] == "30"
    task = invoke(mock, "delay", duration="61")
    assert mock.state()["tasks"][task]["params"]["duration"] == "60"
    task = invoke(mock, "netjitter", duration="20")
    assert mock.state()["tasks"][task]["params"]["duration"] == "20"
    status, out = send(mock, *op("InvokeDiagnosis"), action="InvokeDiagnosis", body={
        "channel": "vm", "service_name": "loadtask", "params": '{"region":"cn-hangzhou"}'})
    assert (status, out["Code"]) == (400, "InvalidParameter")


def poll(mock, task_id):
    status, out = send(mock, *op("GetDiagnosisResult"), query={"task_id": task_id}, action="GetDiagnosisResult")
    assert status == 200, out
    return out["data"]


def test_diagnosis_running_then_success(mock):
    mock.scenario(diagnosis={"polls_before_done": 2, "result": {"summary": "ok"}})
    task = invoke(mock)
    assert [poll(mock, task)["status"] for _ in range(2)] == ["Running", "Running"]
    done = poll(mock, task)
    assert done["status"] == "Success" and isinstance(done["result"], str)
    assert json.loads(done["result"]) == {"summary": "ok"}


def test_diagnosis_running_until_old_enough(mock):
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 0.5})
    task = invoke(mock)
    assert poll(mock, task)["status"] == "Running"
    time.sleep(0.6)
    assert poll(mock, task)["status"] == "Success"


def test_diagnosis_fail_never_and_raw(mock):
    mock.scenario(diagnosis={"polls_before_done": 0, "final": "Fail", "err_msg": "agent offline"})
    data = poll(mock, invoke(mock))
    assert (data["status"], data["err_msg"]) == ("Fail", "agent offline")
    mock.scenario(diagnosis={"final": "never"})
    task = invoke(mock)
    assert {poll(mock, task)["status"] for _ in range(5)} == {"Running"}
    mock.scenario(diagnosis={"final": "Success", "result": "not {json"})
    assert poll(mock, invoke(mock))["result"] == "not {json"


def test_initial_sysom_role_state(mock):
    mock.scenario(role_exist=False)
    check = lambda: send(mock, *op("InitialSysom"), action="InitialSysom",  # noqa: E731
                         body={"check_only": True, "source": "mcp"})[1]["data"]["role_exist"]
    assert check() is False
    send(mock, *op("InitialSysom"), action="InitialSysom", body={"check_only": False, "source": "mcp"})
    assert check() is True


def test_response_override(mock):
    mock.scenario(responses={"ListClusters": {"data": [], "total": 0}})
    assert send(mock, *op("ListClusters"))[1]["data"] == []


# ------------------------------------------------------------------ faults and latency


def test_queued_faults_are_consumed_in_order(mock):
    mock.scenario(faults={"ListClusters": [
        {"status": 503, "code": "ServiceUnavailable", "message": "busy"},
        {"status": 403, "code": "Forbidden.NoPermission", "message": "You are not authorized.", "request_id": "RID-9"},
        {"malformed": True},
    ]})
    assert send(mock, *op("ListClusters"))[1]["Code"] == "ServiceUnavailable"
    status, body = send(mock, *op("ListClusters"))
    assert (status, body["Code"], body["RequestId"]) == (403, "Forbidden.NoPermission", "RID-9")
    status, text = send(mock, *op("ListClusters"), raw=True)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(text)
    assert send(mock, *op("ListClusters"))[0] == 200
    assert [r["status"] for r in mock.requests()] == [503, 403, 200, 200]


def test_fault_times_and_delay(mock):
    mock.scenario(faults={"ListClusters": [{"status": 500, "code": "InternalError", "times": 2}],
                          "ListInstances": [{"delay_ms": 300}]})
    assert [send(mock, *op("ListClusters"))[0] for _ in range(3)] == [500, 500, 200]
    t0 = time.monotonic()
    assert send(mock, *op("ListInstances"), action="ListInstances")[0] == 200
    assert time.monotonic() - t0 >= 0.3


def test_unknown_scenario_key_rejected(mock):
    with pytest.raises(RuntimeError, match="unknown scenario key"):
        mock.scenario(no_such_knob=1)


# ------------------------------------------------------------------ STS and ECS metadata


def raw_http(mock, method, target, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    conn.request(method, target, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


def test_sts_assume_role_credentials_work(mock):
    mock.scenario(sts_lifetime_secs=120)
    form = (f"Action=AssumeRole&AccessKeyId={AKID}&RoleArn=acs%3Aram%3A%3A1%3Arole%2Ft"
            "&RoleSessionName=sysom-mcp&Format=JSON&Version=2015-04-01&Signature=whatever")
    status, text = raw_http(mock, "POST", "/", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, text
    creds = json.loads(text)["Credentials"]
    assert creds["AccessKeyId"].startswith("STS.")
    exp = dt.datetime.strptime(creds["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert 60 < (exp - dt.datetime.now(dt.timezone.utc)).total_seconds() <= 121
    kw = {"akid": creds["AccessKeyId"], "secret": creds["AccessKeySecret"]}
    assert send(mock, *op("ListClusters"), **kw)[1]["Code"] == "InvalidSecurityToken.Mismatch"
    assert send(mock, *op("ListClusters"), token=creds["SecurityToken"], **kw)[0] == 200
    [sts] = mock.requests(kind="sts")
    assert sts["action"] == "AssumeRole" and sts["access_key_id"] == AKID


def test_sts_assume_role_via_query_and_v3_header(mock):
    status, _ = raw_http(mock, "GET", f"/?Action=AssumeRole&AccessKeyId={AKID}&RoleArn=r&RoleSessionName=s")
    assert status == 200
    target, headers, _ = sign_request("POST", "/", {"RoleArn": "r", "RoleSessionName": "s"}, action="AssumeRole",
                                      host=f"127.0.0.1:{mock.port}")
    status, text = raw_http(mock, "POST", target, None, headers)
    assert status == 200 and "Credentials" in json.loads(text)
    assert len(mock.requests(kind="sts")) == 2


def test_sts_expired_credentials_rejected(mock):
    mock.scenario(sts_lifetime_secs=1)
    _, text = raw_http(mock, "GET", f"/?Action=AssumeRole&AccessKeyId={AKID}&RoleArn=r&RoleSessionName=s")
    c = json.loads(text)["Credentials"]
    time.sleep(1.2)
    status, body = send(mock, *op("ListClusters"), akid=c["AccessKeyId"], secret=c["AccessKeySecret"],
                        token=c["SecurityToken"])
    assert (status, body["Code"]) == (403, "InvalidSecurityToken.Expired")


def test_ecs_metadata_flow(mock):
    status, token = raw_http(mock, "PUT", "/latest/api/token",
                             headers={"X-aliyun-ecs-metadata-token-ttl-seconds": "21600"})
    assert status == 200
    hdr = {"X-aliyun-ecs-metadata-token": token}
    status, role = raw_http(mock, "GET", "/latest/meta-data/ram/security-credentials/", headers=hdr)
    assert (status, role) == (200, ms.DEFAULT_ECS_ROLE)
    status, text = raw_http(mock, "GET", f"/latest/meta-data/ram/security-credentials/{role}", headers=hdr)
    c = json.loads(text)
    assert status == 200 and c["Code"] == "Success" and {"Expiration", "LastUpdated"} <= set(c)
    assert send(mock, *op("ListClusters"), akid=c["AccessKeyId"], secret=c["AccessKeySecret"],
                token=c["SecurityToken"])[0] == 200
    assert raw_http(mock, "GET", "/latest/meta-data/ram/security-credentials/other")[0] == 404
    assert raw_http(mock, "GET", "/latest/meta-data/ram/security-credentials/",
                    headers={"X-aliyun-ecs-metadata-token": "bogus"})[0] == 401
    assert len(mock.requests(kind="metadata")) == 5


def test_reset_clears_log_and_scenario(mock):
    mock.scenario(role_exist=False, latency_ms=5)
    send(mock, *op("ListClusters"))
    mock.reset()
    assert mock.requests(kind=None) == []
    assert mock.state()["scenario"]["role_exist"] is True


def test_cli_port_file_and_stdout(tmp_path):
    import subprocess
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-I", ms.__file__, "--port", "0", "--access-key-id", "A",
                             "--access-key-secret", "S", "--port-file", str(port_file)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("MOCK_SYSOM_PORT=")
        port = int(line.split("=", 1)[1])
        assert int(port_file.read_text()) == port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/__mock/requests")
        assert json.loads(conn.getresponse().read()) == []
    finally:
        proc.terminate()
        proc.wait(timeout=5)
