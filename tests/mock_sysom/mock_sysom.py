#!/usr/bin/env python3
"""Mock of the Alibaba Cloud SysOM OpenAPI (2023-12-30) for sysom-mcp's tests.

Standard library only (it also runs inside a minimal Debian guest with just python3).

One HTTP server emulates three upstreams, so the binary can point SYSOM_ENDPOINT,
SYSOM_STS_ENDPOINT and SYSOM_ECS_METADATA_ENDPOINT at the same port:

* the SysOM OpenAPI (ROA style, paths under /api/v1/), every request checked against an
  independent implementation of the ACS3-HMAC-SHA256 signature;
* STS AssumeRole (path "/", Action=AssumeRole in query, form body or x-acs-action header);
* the ECS metadata service (/latest/api/token, /latest/meta-data/ram/security-credentials/...).

Tests steer it through an unsigned control API under /__mock/ (see ``ControlAPI`` below and
``control.py``): set a scenario, reset, read back every recorded request.

Usage:
    mock_sysom.py --host 127.0.0.1 --port 0 --access-key-id AKID --access-key-secret SECRET
                  [--security-token TOK] [--port-file FILE]
prints ``MOCK_SYSOM_PORT=<port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_VERSION = "2023-12-30"
SIGNATURE_ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# The gateway accepts x-acs-date within 15 minutes of its own clock.
MAX_CLOCK_SKEW_SECS = 15 * 60

# ---------------------------------------------------------------------------------------------
# ACS3-HMAC-SHA256 (reference: sysom-openapi.md §3.2). Pure functions, unit-tested against the
# two official vectors in test_mock.py.
# ---------------------------------------------------------------------------------------------


def rfc3986(value: str) -> str:
    """Percent-encode like the SDK: keep A-Z a-z 0-9 - _ . ~, everything else %XX (UTF-8)."""
    return urllib.parse.quote(value, safe="~")


def canonical_query_from_raw(raw_query: str) -> str:
    """Rebuild the canonical query string from the query string as received on the wire.

    Each key and value is decoded first (``%20`` and ``+`` both mean a space, as the gateway
    normalises them) and then re-encoded with RFC 3986 rules; pairs are sorted by key.
    """
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    encoded = sorted((rfc3986(k), rfc3986(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_headers(headers: list[tuple[str, str]], signed: list[str]) -> str:
    """``name:trimmed value\\n`` for each signed header (repeated names: values sorted, joined by ',')."""
    out = []
    for name in signed:
        values = sorted(v.strip() for k, v in headers if k.lower() == name)
        out.append(f"{name}:{','.join(values)}\n")
    return "".join(out)


def canonical_request(method: str, path: str, raw_query: str, headers: list[tuple[str, str]],
                      signed: list[str], hashed_payload: str) -> str:
    return "\n".join([
        method.upper(),
        path or "/",
        canonical_query_from_raw(raw_query),
        canonical_headers(headers, signed),  # ends with "\n", so an empty line follows
        ";".join(signed),
        hashed_payload,
    ])


def string_to_sign(canonical: str) -> str:
    return SIGNATURE_ALGORITHM + "\n" + hashlib.sha256(canonical.encode()).hexdigest()


def signature(secret: str, to_sign: str) -> str:
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


_AUTH_RE = re.compile(
    r"^ACS3-HMAC-SHA256 Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-fA-F]+)$")


def parse_authorization(value: str) -> dict | None:
    m = _AUTH_RE.match(value.strip())
    if not m:
        return None
    return {"credential": m["cred"], "signed_headers": m["signed"].split(";"), "signature": m["sig"].lower()}


# ---------------------------------------------------------------------------------------------
# The operations of sysom-openapi.md §3.3.
# ---------------------------------------------------------------------------------------------

# action -> (method, path, request-id key of its success body)
OPERATIONS = {
    "InvokeDiagnosis": ("POST", "/api/v1/openapi/diagnosis/invoke_diagnosis", "request_id"),
    "GetDiagnosisResult": ("GET", "/api/v1/openapi/diagnosis/get_diagnosis_results", "request_id"),
    "ListAllInstances": ("GET", "/api/v1/am/instance/listAllInstances", "requestId"),
    "ListInstances": ("GET", "/api/v1/am/instance/list_instances", "request_id"),
    "ListClusters": ("GET", "/api/v1/am/cluster/list_clusters", "RequestId"),
    "ListPodsOfInstance": ("GET", "/api/v1/am/instance/list_pod_of_instance", "RequestId"),
    "InitialSysom": ("POST", "/api/v1/openapi/initial", "RequestId"),
    "CreateVmcoreDiagnosisTask": ("POST", "/api/v1/crashAgent/diagnosis/createDiagnosisTask", "requestId"),
    "GetVmcoreDiagnosisTask": ("GET", "/api/v1/crashAgent/diagnosis/queryTask", "requestId"),
    "ListVmcoreDiagnosisTask": ("GET", "/api/v1/crashAgent/diagnosis/queryTaskList", "requestId"),
}

DIAGNOSIS_SERVICES = {"memgraph", "javamem", "oomcheck", "iofsstat", "iodiagnose", "packetdrop",
                      "netjitter", "delay", "loadtask", "vmcore", "diskanalysis"}

DEFAULT_ECS_ROLE = "SysomMcpTestRole"

# Realistic default success data; a scenario's "responses" can override any field per action.
DEFAULT_DATA = {
    "ListAllInstances": {
        "data": [{
            "instanceId": "i-bp1mock0000000000001", "instanceName": "mock-node-1", "instanceType": "ecs",
            "status": "Running", "osName": "Alibaba Cloud Linux 3", "osArch": "x86_64",
            "kernelVersion": "5.10.134-16.al8.x86_64", "privateIp": "172.16.0.10", "publicIp": "",
            "clusterId": "", "clusterName": "", "resourceGroupId": "rg-mock", "resourceGroupName": "default",
            "osHealthScore": 100, "agentConfigId": "", "agentConfigName": "", "imageId": "aliyun_3_x64",
            "installLevel": "", "installType": "", "manageLevel": "", "manageType": "managed",
            "attributes": [{"infoKey": "env", "infoType": "instance_tag", "infoValue": "test"}],
        }],
        "total": 1, "nextToken": "", "maxResults": 100,
    },
    "ListInstances": {
        "data": [{
            "instance": "i-bp1mock0000000000001", "region": "cn-hangzhou", "status": "online",
            "cluster_id": "", "os_name": "Alibaba Cloud Linux", "os_name_id": "alinux", "os_version": "3",
            "os_version_id": "3", "os_arch": "x86_64", "kernel_version": "5.10.134-16.al8.x86_64",
            "os_health_score": 100, "meta": {},
        }],
        "total": 1,
    },
    "ListClusters": {
        "data": [{
            "id": "c-sysom-0001", "cluster_id": "c8d1f2mockack", "name": "mock-ack", "cluster_type": "ACK",
            "cluster_status": "Running", "region": "cn-hangzhou",
            "created_at": "2026-01-01 00:00:00", "updated_at": "2026-01-02 00:00:00",
        }],
        "total": 1,
    },
    "ListPodsOfInstance": {
        "data": [{"pod": "nginx-7d9c8b-abcde", "namespace": "default"},
                 {"pod": "coredns-5f6b-xyz12", "namespace": "kube-system"}],
        "total": 2,
    },
    "GetVmcoreDiagnosisTask": {
        "data": {
            "taskId": "", "taskType": "vmcore", "taskStatus": "success", "createdAt": "2026-01-01 00:00:00",
            "errorMsg": "", "diagnoseResult": "kernel BUG at mm/slub.c:123; fix: upstream commit abc123",
            "urls": {"vmcoreUrl": "https://example.invalid/vmcore", "debuginfoUrl": "",
                     "debuginfoCommonUrl": "", "dmesgUrl": ""},
        },
    },
    "ListVmcoreDiagnosisTask": {
        "data": [{"taskId": "vmcore-task-0001", "taskType": "vmcore", "taskStatus": "success",
                  "createdAt": "2026-01-01 00:00:00", "errorMsg": ""},
                 {"taskId": "dmesg-task-0002", "taskType": "dmesg", "taskStatus": "error",
                  "createdAt": "2026-01-02 00:00:00", "errorMsg": "download failed"}],
        "total": 2,
    },
}

DEFAULT_SCENARIO = {
    "latency_ms": 0,            # added to every OpenAPI/STS/metadata response
    # action -> list of {status, code, message, request_id, malformed, delay_ms, times,
    #                    redirect (Location URL; status 307 unless given), drip_ms (one body byte per
    #                    drip_ms), huge_bytes (a valid JSON success body of about this size)}
    "faults": {},
    "responses": {},            # action -> dict merged over the default success body
    "diagnosis": {
        "polls_before_done": 1,  # GetDiagnosisResult answers Running this many times first
        "seconds_before_done": 0,  # ... and also until the task is this many seconds old
        "final": "Success",      # Success | Fail | never
        "result": {"summary": "mock diagnosis ok", "items": [{"name": "check", "status": "normal"}]},
        "err_msg": "mock diagnosis failed",
    },
    "role_exist": True,          # InitialSysom check_only answer (check_only=false activates)
    "security_token": None,      # if set, the configured AccessKey must send this x-acs-security-token
    "sts_lifetime_secs": None,   # AssumeRole credential lifetime (None: DurationSeconds or 3600)
    "ecs_role_name": DEFAULT_ECS_ROLE,
    "ecs_lifetime_secs": 21600,
    "imds_token_required": False,  # metadata GETs need X-aliyun-ecs-metadata-token
}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_z(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


class ApiError(Exception):
    """An error answered in the gateway's shape: {"RequestId","HostId","Code","Message"}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def incomplete_signature(detail: str) -> ApiError:
    return ApiError(400, "IncompleteSignature",
                    "The request signature does not conform to Aliyun standards. " + detail)


class Credential:
    def __init__(self, akid: str, secret: str, token: str | None = None,
                 expires: dt.datetime | None = None, origin: str = "static"):
        self.akid, self.secret, self.token, self.expires, self.origin = akid, secret, token, expires, origin


class MockState:
    """Everything the handlers share, behind one lock."""

    def __init__(self, akid: str, secret: str, token: str | None):
        self.lock = threading.Lock()
        self.base_akid, self.base_secret, self.base_token = akid, secret, token
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.scenario = copy.deepcopy(DEFAULT_SCENARIO)
            self.scenario["security_token"] = self.base_token
            self.requests: list[dict] = []
            self.nonces: set[str] = set()
            self.tasks: dict[str, dict] = {}
            self.creds: dict[str, Credential] = {
                self.base_akid: Credential(self.base_akid, self.base_secret, None, None, "static")}
            self.activated = False
            self.imds_tokens: set[str] = set()

    def set_scenario(self, patch: dict) -> None:
        with self.lock:
            for key, value in patch.items():
                if key not in DEFAULT_SCENARIO:
                    raise ValueError(f"unknown scenario key {key!r}")
                if key == "diagnosis":
                    self.scenario["diagnosis"].update(value)
                else:
                    self.scenario[key] = copy.deepcopy(value)

    def next_fault(self, action: str) -> dict | None:
        with self.lock:
            queue = self.scenario["faults"].get(action) or []
            if not queue:
                return None
            fault = queue[0]
            times = fault.get("times", 1)
            if times == -1:  # permanent
                return dict(fault)
            if times <= 1:
                queue.pop(0)
            else:
                fault["times"] = times - 1
            return dict(fault)

    def lookup(self, akid: str) -> Credential | None:
        with self.lock:
            cred = self.creds.get(akid)
            if cred and cred.origin == "static":
                # The scenario may require an STS token for the configured AccessKey.
                return Credential(cred.akid, cred.secret, self.scenario["security_token"], None, "static")
            return cred

    def add_temporary(self, prefix: str, lifetime: int, origin: str) -> Credential:
        cred = Credential(prefix + secrets.token_hex(8), "tmpsecret-" + secrets.token_hex(16),
                          "tmptoken-" + secrets.token_hex(24),
                          utc_now() + dt.timedelta(seconds=lifetime), origin)
        with self.lock:
            self.creds[cred.akid] = cred
        return cred


# ---------------------------------------------------------------------------------------------
# Signature verification of one OpenAPI request.
# ---------------------------------------------------------------------------------------------

REQUIRED_HEADERS = ("x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce",
                    "x-acs-content-sha256", "authorization")


def verify_request(state: MockState, method: str, path: str, raw_query: str,
                   headers: list[tuple[str, str]], body: bytes) -> tuple[bool, ApiError | None, str | None]:
    """Check one OpenAPI request like the gateway. Returns (signature_ok, first error, akid)."""
    h = {}
    for k, v in headers:
        h.setdefault(k.lower(), v)

    for name in REQUIRED_HEADERS:
        if not h.get(name):
            code = "MissingAuthorization" if name == "authorization" else "MissingParameter"
            return False, ApiError(400, code, f"The input parameter \"{name}\" that is mandatory "
                                              "for processing this request is not supplied."), None

    if h["x-acs-version"] != API_VERSION:
        return False, ApiError(400, "InvalidVersion",
                               f"Specified parameter Version is not valid: {h['x-acs-version']}"), None

    auth = parse_authorization(h["authorization"])
    if auth is None:
        return False, incomplete_signature("Malformed Authorization header (expected "
                                           "'ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..')."), None
    akid = auth["credential"]
    signed = auth["signed_headers"]

    # The operation must exist and match the method and path.
    op = OPERATIONS.get(h["x-acs-action"])
    if op is None or op[0] != method or op[1] != path:
        return False, ApiError(404, "InvalidAction.NotFound",
                               f"Specified api is not found, please check your url and method "
                               f"(action {h['x-acs-action']}, {method} {path})."), akid

    cred = state.lookup(akid)
    if cred is None:
        return False, ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."), akid

    try:
        sent = dt.datetime.strptime(h["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return False, ApiError(400, "InvalidTimeStamp.Format",
                               f"Specified time stamp or date value is not well formatted: {h['x-acs-date']}"), akid
    if abs((utc_now() - sent).total_seconds()) > MAX_CLOCK_SKEW_SECS:
        return False, ApiError(400, "InvalidTimeStamp.Expired",
                               "Specified time stamp or date value is expired."), akid

    # SignedHeaders: lowercase, sorted, and covering host, content-type and every x-acs-* header.
    if signed != sorted(signed) or any(s != s.lower() or not s for s in signed):
        return False, incomplete_signature("SignedHeaders must be lowercase and sorted."), akid
    must_sign = {"host"} | {k for k in h if k.startswith("x-acs-")}
    if "content-type" in h:
        must_sign.add("content-type")
    missing = sorted(must_sign - set(signed))
    if missing:
        return False, incomplete_signature(f"Headers not signed: {', '.join(missing)}."), akid
    absent = sorted(s for s in signed if s not in h)
    if absent:
        return False, incomplete_signature(f"Signed headers not present: {', '.join(absent)}."), akid

    body_hash = hashlib.sha256(body).hexdigest()
    if h["x-acs-content-sha256"].lower() != body_hash:
        return False, incomplete_signature("x-acs-content-sha256 does not match the SHA-256 of the body."), akid

    canonical = canonical_request(method, path, raw_query, headers, signed, h["x-acs-content-sha256"])
    to_sign = string_to_sign(canonical)
    if not hmac.compare_digest(signature(cred.secret, to_sign), auth["signature"]):
        # The real gateway also echoes its string to sign; it carries no secret.
        return False, incomplete_signature(f"server string to sign is:{to_sign}"), akid

    # Replayed nonces are rejected only for otherwise valid requests (as a replay would be).
    nonce = h["x-acs-signature-nonce"]
    with state.lock:
        reused = nonce in state.nonces
        state.nonces.add(nonce)
    if reused:
        return True, ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already."), akid

    if cred.token is not None:
        got = h.get("x-acs-security-token")
        if got is None or got != cred.token:
            return True, ApiError(403, "InvalidSecurityToken.Mismatch",
                                  "Specified SecurityToken is missing or mismatches the AccessKey."), akid
        if cred.expires is not None and utc_now() >= cred.expires:
            return True, ApiError(403, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired."), akid
    return True, None, akid


# ---------------------------------------------------------------------------------------------
# Operation handlers: return the success body (without request id) or raise ApiError(400).
# ---------------------------------------------------------------------------------------------


def bad_param(name: str, why: str) -> ApiError:
    return ApiError(400, "InvalidParameter", f"The parameter {name} is invalid: {why}")


def need_query(query: dict, name: str) -> str:
    if not query.get(name):
        raise ApiError(400, "MissingParameter", f"The input parameter \"{name}\" that is mandatory "
                                                "for processing this request is not supplied.")
    return query[name]


def check_int(query: dict, name: str, lo: int | None = None, hi: int | None = None) -> None:
    if name not in query:
        return
    try:
        n = int(query[name])
    except ValueError:
        raise bad_param(name, f"not an integer: {query[name]!r}") from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise bad_param(name, f"{n} out of range [{lo}, {hi}]")


def need_json_object(body_json) -> dict:
    if not isinstance(body_json, dict):
        raise ApiError(400, "InvalidParameter", "The request body must be a JSON object.")
    return body_json


# The limits the SysOM team documents (sysom-openapi.md section 5): what the backend does with an
# over-limit value. The task keeps the *effective* params, so a test can see a silent clamp.
SERVICE_LIMITS = {
    "iofsstat": ("timeout", 30, 30),      # > 30 is capped to 30
    "iodiagnose": ("timeout", 300, 30),   # over 300 falls back to 30
    "delay": ("duration", 60, 60),
    "netjitter": ("duration", 60, 60),
}


def apply_service_limits(service: str, params: dict) -> dict:
    limit = SERVICE_LIMITS.get(service)
    if limit is None:
        return params
    field, most, replacement = limit
    try:
        value = float(params.get(field, ""))
    except (TypeError, ValueError):
        return params
    if value > most:
        params = {**params, field: str(replacement)}
    return params


def op_invoke_diagnosis(state: MockState, query: dict, body) -> dict:
    body = need_json_object(body)
    for key in ("service_name", "channel", "params"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ApiError(400, "MissingParameter", f"The body field \"{key}\" (string) is required.")
    if body["service_name"] not in DIAGNOSIS_SERVICES:
        raise bad_param("service_name", f"unknown service {body['service_name']!r}")
    if body["channel"] not in ("ecs", "auto", "eflo"):
        raise bad_param("channel", "must be ecs, auto or eflo")
    try:
        params = json.loads(body["params"])
    except ValueError as e:
        raise bad_param("params", f"not a JSON string: {e}") from None
    if not isinstance(params, dict) or not params.get("region"):
        raise bad_param("params", "must be a JSON object with region")
    # As SysOM's gateway does: older marker keys are stripped; only __sysom_diagnosis_source counts.
    params.pop("source", None)
    params = apply_service_limits(body["service_name"], params)
    task_id = "mock-" + secrets.token_hex(6)
    with state.lock:
        state.tasks[task_id] = {"service_name": body["service_name"], "channel": body["channel"],
                                "params": params, "polls": 0, "created": utc_now(),
                                "diagnosis": copy.deepcopy(state.scenario["diagnosis"])}
    return {"code": "Success", "message": "", "data": {"task_id": task_id}}


def op_get_diagnosis_result(state: MockState, query: dict, body) -> dict:
    task_id = need_query(query, "task_id")
    with state.lock:
        task = state.tasks.get(task_id)
        if task is None:
            raise bad_param("task_id", f"task {task_id} not found")
        task["polls"] += 1
        polls, diag = task["polls"], task["diagnosis"]
    final = diag["final"]
    result, err_msg = "", ""
    age = (utc_now() - task["created"]).total_seconds()
    if final == "never" or polls <= int(diag["polls_before_done"]) \
            or age < float(diag.get("seconds_before_done") or 0):
        status = "Running"
    elif final == "Fail":
        status, err_msg = "Fail", diag["err_msg"]
    else:
        status = "Success"
        raw = diag["result"]
        # The API returns the result as a JSON *string*; a raw string is sent as is (for parse errors).
        result = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
    created = task["created"].strftime("%Y-%m-%d %H:%M:%S")
    return {"code": "Success", "message": "", "data": {
        "task_id": task_id, "status": status, "result": result, "err_msg": err_msg,
        "code": 0 if status != "Fail" else 1, "command": {},
        "params": json.dumps(task["params"], ensure_ascii=False), "service_name": task["service_name"],
        "created_at": created, "updated_at": utc_now().strftime("%Y-%m-%d %H:%M:%S"),
        "url": f"/diagnose/detail/{task_id}"}}


def op_list_all_instances(state, query, body) -> dict:
    check_int(query, "maxResults", 1, 1000)
    for key in ("current", "pageSize"):
        check_int(query, key, 1)
    if "filters" in query:
        try:
            filters = json.loads(query["filters"])
        except ValueError:
            raise bad_param("filters", "not a JSON string") from None
        if not isinstance(filters, list):
            raise bad_param("filters", "must be a JSON array")
    return {"code": "Success", "message": "", **copy.deepcopy(DEFAULT_DATA["ListAllInstances"])}


def _list_op(action: str):
    def handler(state, query, body) -> dict:
        check_int(query, "current", 1)
        check_int(query, "pageSize", 1, 100)
        return {"code": "Success", "message": "", **copy.deepcopy(DEFAULT_DATA[action])}
    return handler


def op_initial_sysom(state: MockState, query, body) -> dict:
    body = need_json_object(body)
    if "check_only" in body and not isinstance(body["check_only"], bool):
        raise bad_param("check_only", "must be a boolean")
    if "source" in body and not isinstance(body["source"], str):
        raise bad_param("source", "must be a string")
    with state.lock:
        if body.get("check_only"):
            exists = bool(state.scenario["role_exist"]) or state.activated
        else:
            state.activated = True
            exists = True
    return {"code": "Success", "message": "", "data": {"role_exist": exists}}


def op_create_vmcore_task(state, query, body) -> dict:
    body = need_json_object(body)
    task_type = body.get("taskType")
    if task_type not in ("vmcore", "dmesg"):
        raise bad_param("taskType", "must be vmcore or dmesg")
    needed = "vmcoreUrl" if task_type == "vmcore" else "dmesgUrl"
    if not isinstance(body.get(needed), str) or not body[needed]:
        raise ApiError(400, "MissingParameter", f"The body field \"{needed}\" is required for {task_type}.")
    for key, value in body.items():
        if key not in ("taskType", "vmcoreUrl", "debuginfoUrl", "debuginfoCommonUrl", "dmesgUrl"):
            raise bad_param(key, "unknown field")
        if not isinstance(value, str):
            raise bad_param(key, "must be a string")
    return {"code": "Success", "message": "", "data": {"taskId": f"{task_type}-" + secrets.token_hex(6)}}


def op_get_vmcore_task(state, query, body) -> dict:
    task_id = need_query(query, "taskId")
    out = {"code": "Success", "message": "", **copy.deepcopy(DEFAULT_DATA["GetVmcoreDiagnosisTask"])}
    out["data"]["taskId"] = task_id
    return out


def op_list_vmcore_tasks(state, query, body) -> dict:
    need_query(query, "days")
    check_int(query, "days", 1, 30)
    return {"code": "Success", "message": "", **copy.deepcopy(DEFAULT_DATA["ListVmcoreDiagnosisTask"])}


HANDLERS = {
    "InvokeDiagnosis": op_invoke_diagnosis,
    "GetDiagnosisResult": op_get_diagnosis_result,
    "ListAllInstances": op_list_all_instances,
    "ListInstances": _list_op("ListInstances"),
    "ListClusters": _list_op("ListClusters"),
    "ListPodsOfInstance": _list_op("ListPodsOfInstance"),
    "InitialSysom": op_initial_sysom,
    "CreateVmcoreDiagnosisTask": op_create_vmcore_task,
    "GetVmcoreDiagnosisTask": op_get_vmcore_task,
    "ListVmcoreDiagnosisTask": op_list_vmcore_tasks,
}


# ---------------------------------------------------------------------------------------------
# HTTP plumbing.
# ---------------------------------------------------------------------------------------------


def flat_query(raw_query: str) -> dict:
    """Decoded query; a repeated key keeps its last value (none of the operations repeats keys)."""
    return {k: v for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MockSysOM/1.0"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms on Linux) and every answer is 40 ms slower than latency_ms says.
    disable_nagle_algorithm = True
    state: MockState  # set on the class by make_server

    def log_message(self, fmt, *args):  # keep the test output quiet
        pass

    # -- request entry points --
    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self):
        parts = urllib.parse.urlsplit(self.path)
        path, raw_query = parts.path, parts.query
        body = self._read_body()
        if path.startswith("/__mock/"):
            return ControlAPI(self).handle(path, body)

        record = {
            "seq": None, "time": time.time(), "method": self.command, "path": path,
            "raw_query": raw_query, "query": flat_query(raw_query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"), "json": None,
            "action": None, "kind": None, "signature_ok": None, "access_key_id": None,
            "status": None, "error_code": None,
            # The client's source port: distinct ports = distinct TCP connections (bench/ counts
            # how many connections the server's pooled client opens).
            "client_port": self.client_address[1] if isinstance(self.client_address, tuple) else None,
        }
        try:
            record["json"] = json.loads(body) if body else None
        except ValueError:
            pass
        latency = self.state.scenario["latency_ms"]
        if latency:
            time.sleep(latency / 1000)

        if path.startswith("/latest/"):
            record["kind"] = "metadata"
            return self._metadata(record)
        if path == "/" and self._sts_action(record) is not None:
            record["kind"] = "sts"
            return self._sts(record)
        record["kind"] = "openapi"
        record["action"] = self.headers.get("x-acs-action")
        return self._openapi(record, body)

    # -- responses --
    def _send(self, record: dict | None, status: int, payload, content_type="application/json;charset=utf-8",
              error_code: str | None = None):
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False).encode())
        if record is not None:
            record["status"], record["error_code"] = status, error_code
            with self.state.lock:
                record["seq"] = len(self.state.requests)
                self.state.requests.append(record)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-acs-request-id", new_request_id())
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (read-timeout tests)

    def _send_error(self, record, err: ApiError, request_id: str | None = None):
        rid = request_id or new_request_id()
        payload = {"RequestId": rid, "HostId": self.headers.get("Host", ""), "Code": err.code,
                   "Message": err.message, "Recommend": f"https://api.aliyun.com/troubleshoot?q={err.code}"}
        self._send(record, err.status, payload, error_code=err.code)

    def _apply_fault(self, record, action: str) -> bool:
        """Consume the next queued fault for this action; True if it produced the response."""
        fault = self.state.next_fault(action)
        if fault is None:
            return False
        if fault.get("delay_ms"):
            time.sleep(fault["delay_ms"] / 1000)
        record["fault"] = fault
        if fault.get("redirect"):
            return self._send_redirect(record, int(fault.get("status", 307)), fault["redirect"])
        if fault.get("drip_ms"):
            return self._send_drip(record, fault["drip_ms"] / 1000)
        if fault.get("huge_bytes"):
            return self._send_huge(record, int(fault["huge_bytes"]))
        if fault.get("malformed"):
            self._send(record, fault.get("status", 200), b"<html><body>502 Bad Gateway (not JSON)",
                       content_type=fault.get("content_type", "application/json"), error_code="Malformed")
            return True
        if fault.get("status"):
            err = ApiError(int(fault["status"]), fault.get("code", "InternalError"),
                           fault.get("message", "The request processing has failed due to some unknown error."))
            self._send_error(record, err, fault.get("request_id"))
            return True
        return False  # a pure delay: answer normally

    # -- misbehaving answers (hostile-upstream tests) --
    def _log(self, record, status: int, error_code: str) -> None:
        record["status"], record["error_code"] = status, error_code
        with self.state.lock:
            record["seq"] = len(self.state.requests)
            self.state.requests.append(record)

    def _send_redirect(self, record, status: int, location: str) -> bool:
        self._log(record, status, "Redirect")
        try:
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return True

    def _send_drip(self, record, interval: float) -> bool:
        """A valid success body, one byte every `interval` seconds: never finishes in practice."""
        body = json.dumps({"RequestId": new_request_id(), "code": "Success", "data": "x" * 4096}).encode()
        self._log(record, 200, "Drip")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(interval)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should
        return True

    def _send_huge(self, record, size: int) -> bool:
        """A valid JSON success body of about `size` bytes, streamed in 64 KiB chunks."""
        head = json.dumps({"RequestId": new_request_id(), "code": "Success"})[:-1].encode() + b', "data": "'
        tail = b'"}'
        filler = max(0, size - len(head) - len(tail))
        self._log(record, 200, "Huge")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(head) + filler + len(tail)))
            self.end_headers()
            self.wfile.write(head)
            chunk = b"x" * 65536
            while filler > 0:
                n = min(filler, len(chunk))
                self.wfile.write(chunk[:n])
                filler -= n
            self.wfile.write(tail)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return True

    # -- the SysOM OpenAPI --
    def _openapi(self, record, body: bytes):
        sig_ok, err, akid = verify_request(self.state, self.command, record["path"], record["raw_query"],
                                           list(self.headers.items()), body)
        record["signature_ok"], record["access_key_id"] = sig_ok, akid
        if err is not None:
            return self._send_error(record, err)
        action = record["action"]
        if self._apply_fault(record, action):
            return
        if self.command in ("POST", "PUT") and body:
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("application/json"):
                return self._send_error(record, ApiError(400, "InvalidParameter",
                                                         f"Unsupported content type {ctype!r} for a JSON body."))
            if record["json"] is None:
                return self._send_error(record, ApiError(400, "InvalidParameter", "The body is not valid JSON."))
        try:
            out = HANDLERS[action](self.state, record["query"], record["json"])
        except ApiError as e:
            return self._send_error(record, e)
        with self.state.lock:
            override = copy.deepcopy(self.state.scenario["responses"].get(action) or {})
        out.update(override)
        rid_key = OPERATIONS[action][2]
        out.setdefault(rid_key, new_request_id())
        self._send(record, 200, out)

    # -- STS --
    def _sts_action(self, record) -> str | None:
        form = {}
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            form = flat_query(record["body"])
        record["form"] = form
        action = record["query"].get("Action") or form.get("Action") or self.headers.get("x-acs-action")
        return action if action == "AssumeRole" else None

    def _sts(self, record):
        record["action"] = "AssumeRole"
        params = {**record["query"], **record["form"]}
        # Signatures are not verified for STS; note which AccessKey asked (RPC: AccessKeyId param,
        # V3: Credential= in Authorization).
        akid = params.get("AccessKeyId")
        auth = parse_authorization(self.headers.get("Authorization", "") or "")
        if akid is None and auth:
            akid = auth["credential"]
        record["access_key_id"] = akid
        if self._apply_fault(record, "AssumeRole"):
            return
        if akid != self.state.base_akid:
            return self._send_error(record, ApiError(404, "InvalidAccessKeyId.NotFound",
                                                     "Specified access key is not found."))
        for name in ("RoleArn", "RoleSessionName"):
            if not params.get(name):
                return self._send_error(record, ApiError(400, f"MissingParameter.{name}",
                                                         f"The input parameter {name} is mandatory."))
        lifetime = self.state.scenario["sts_lifetime_secs"] or int(params.get("DurationSeconds") or 3600)
        cred = self.state.add_temporary("STS.mock", lifetime, "sts")
        self._send(record, 200, {
            "RequestId": new_request_id(),
            "AssumedRoleUser": {"Arn": f"{params['RoleArn']}/{params['RoleSessionName']}",
                                "AssumedRoleId": "3000000000000:" + params["RoleSessionName"]},
            "Credentials": {"AccessKeyId": cred.akid, "AccessKeySecret": cred.secret,
                            "SecurityToken": cred.token, "Expiration": iso_z(cred.expires)}})

    # -- ECS metadata --
    def _metadata(self, record):
        path = record["path"]
        record["action"] = "Metadata"
        sc = self.state.scenario
        if self._apply_fault(record, "Metadata"):
            return
        if path == "/latest/api/token":
            if self.command != "PUT":
                return self._send(record, 405, b"method not allowed", "text/plain")
            if not self.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds"):
                return self._send(record, 400, b"missing X-aliyun-ecs-metadata-token-ttl-seconds", "text/plain")
            token = "imds-" + secrets.token_hex(16)
            with self.state.lock:
                self.state.imds_tokens.add(token)
            return self._send(record, 200, token.encode(), "text/plain")
        token = self.headers.get("X-aliyun-ecs-metadata-token")
        if token is not None or sc["imds_token_required"]:
            if token not in self.state.imds_tokens:
                return self._send(record, 401, b"invalid metadata token", "text/plain")
        prefix = "/latest/meta-data/ram/security-credentials/"
        if self.command != "GET" or not path.startswith(prefix):
            return self._send(record, 404, b"Not Found", "text/plain")
        role = path[len(prefix):]
        if role == "":
            return self._send(record, 200, sc["ecs_role_name"].encode(), "text/plain")
        if role != sc["ecs_role_name"]:
            return self._send(record, 404, b"Not Found", "text/plain")
        cred = self.state.add_temporary("STS.ecs", int(sc["ecs_lifetime_secs"]), "ecs")
        self._send(record, 200, {
            "AccessKeyId": cred.akid, "AccessKeySecret": cred.secret, "SecurityToken": cred.token,
            "Expiration": iso_z(cred.expires), "LastUpdated": iso_z(utc_now()), "Code": "Success"})


class ControlAPI:
    """Unsigned test-control endpoints:

    POST /__mock/scenario   JSON object merged into the scenario (keys of DEFAULT_SCENARIO;
                            "diagnosis" is merged key by key, the others replaced)
    POST /__mock/reset      back to the start state (scenario, requests, tasks, nonces, credentials)
    GET  /__mock/requests   every recorded upstream request (OpenAPI, STS, metadata), oldest first
    GET  /__mock/state      scenario, tasks, temporary credentials (for debugging)
    """

    def __init__(self, handler: Handler):
        self.h = handler

    def handle(self, path: str, body: bytes):
        state = self.h.state
        try:
            if path == "/__mock/scenario" and self.h.command == "POST":
                patch = json.loads(body or b"{}")
                if not isinstance(patch, dict):
                    raise ValueError("scenario must be a JSON object")
                state.set_scenario(patch)
                return self.h._send(None, 200, {"ok": True, "scenario": state.scenario})
            if path == "/__mock/reset" and self.h.command == "POST":
                state.reset()
                return self.h._send(None, 200, {"ok": True})
            if path == "/__mock/requests" and self.h.command == "GET":
                with state.lock:
                    return self.h._send(None, 200, list(state.requests))
            if path == "/__mock/state" and self.h.command == "GET":
                with state.lock:
                    snap = {"scenario": state.scenario, "activated": state.activated,
                            "tasks": {k: {**v, "created": str(v["created"])} for k, v in state.tasks.items()},
                            "credentials": [{"access_key_id": c.akid, "origin": c.origin,
                                             "expires": c.expires and iso_z(c.expires)}
                                            for c in state.creds.values()]}
                return self.h._send(None, 200, snap)
        except ValueError as e:
            return self.h._send(None, 400, {"ok": False, "error": str(e)})
        return self.h._send(None, 404, {"ok": False, "error": f"no control route {self.h.command} {path}"})


def make_server(host: str, port: int, akid: str, secret: str, token: str | None) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": MockState(akid, secret, token)})
    # socketserver's listen backlog is 5: a burst of new connections (a thousand diagnoses in
    # flight) would see SYNs dropped and connect timeouts that a real gateway does not cause.
    server_class = type("MockServer", (ThreadingHTTPServer,), {"request_queue_size": 1024, "daemon_threads": True})
    return server_class((host, port), handler)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Mock SysOM OpenAPI + STS + ECS metadata server for tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--access-key-id", required=True)
    ap.add_argument("--access-key-secret", required=True)
    ap.add_argument("--security-token", default=None,
                    help="require this x-acs-security-token with the AccessKey (STS mode)")
    ap.add_argument("--port-file", default=None, help="also write the bound port to this file")
    args = ap.parse_args(argv)
    server = make_server(args.host, args.port, args.access_key_id, args.access_key_secret, args.security_token)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(f"{port}\n")
    print(f"MOCK_SYSOM_PORT={port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
