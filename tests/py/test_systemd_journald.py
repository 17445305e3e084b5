"""journald logging through a fake journal socket.

tracing-journald always uses /run/systemd/journal/socket, so the binary runs in a private mount
namespace (``unshare -m``, root) with a tmpfs on /run/systemd and a Python datagram socket there.
Each tool call must be one record with the SYSOM_* fields, INFO at priority 6, and no secret, plus one
audit record (SYSOM_AUDIT=1: principal, scope decision, client address) per call and per refusal.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import support
from support import (journal_argv, journal_field, parse_journal_datagram, read_journal_capture, stderr_text,
                     tools_call, tools_list, unshare_available, wait_exit, wait_healthz, wait_until)

BEARER = "journald-canary-bearer-token-7f3a9c"
WRONG_BEARER = "journald-canary-wrong-token-51e0d2"


@pytest.fixture(scope="module")
def can_unshare():
    reason = unshare_available()
    if reason:
        pytest.skip(reason)


def entries(outfile) -> list[dict[str, list[bytes]]]:
    return [parse_journal_datagram(d) for d in read_journal_capture(outfile)]


def tool_records(outfile, tool: str) -> list[dict[str, list[bytes]]]:
    """The log records of `tool`'s calls (not the audit records, which carry SYSOM_AUDIT=1)."""
    return [e for e in entries(outfile) if journal_field(e, "SYSOM_TOOL") == tool and "SYSOM_AUDIT" not in e]


def audit_records(outfile) -> list[dict[str, list[bytes]]]:
    return [e for e in entries(outfile) if journal_field(e, "SYSOM_AUDIT") == "1"]


def start_in_fake_journal(procs, tmp_path, mock, config_file, extra_args, **env_overrides):
    port = support.free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# clients\n{BEARER}\n")
    outfile = tmp_path / "journal.bin"
    env = support.server_env(mock, **env_overrides)
    argv = journal_argv(outfile, [str(support.binary_path()), "--streamable-http", "--port", str(port),
                                  "--config", str(config_file), "--token-file", str(tokens), *extra_args])
    proc = procs.popen(argv, env)
    wait_healthz(port=port, proc=proc)
    return proc, port, outfile


def check_tool_record(proc, port, outfile, mock):
    # A rejected token is not logged either.
    status, _ = tools_list(port=port, headers={"Authorization": f"Bearer {WRONG_BEARER}"})
    assert status == 401
    status, out = tools_call("memgraph", support.MINIMAL_ARGS["memgraph"], port=port,
                             headers={"Authorization": f"Bearer {BEARER}"})
    assert status == 200, status
    result = out["result"]["structuredContent"]
    assert result["code"] == "Success", result

    def memgraph_records():
        return tool_records(outfile, "memgraph")

    wait_until(memgraph_records, 5, what="a journal record with SYSOM_TOOL=memgraph")
    time.sleep(0.3)
    records = memgraph_records()
    assert len(records) == 1, records
    rec = records[0]
    assert journal_field(rec, "PRIORITY") == "6"
    assert journal_field(rec, "SYSLOG_IDENTIFIER") == "sysom-mcp"
    assert journal_field(rec, "SYSOM_UPSTREAM_ACTION") == "InvokeDiagnosis"
    assert journal_field(rec, "SYSOM_RESULT_CODE") == "Success"
    assert journal_field(rec, "SYSOM_TASK_ID") == result["task_id"], (rec, result)
    assert journal_field(rec, "SYSOM_DURATION_MS").isdigit()
    assert journal_field(rec, "SYSOM_CLIENT_ADDR").startswith("127.0.0.1:"), rec
    assert "SYSOM_REQUEST_ID" in rec
    assert "memgraph" in journal_field(rec, "MESSAGE")
    assert not [k for k in rec if k.startswith("F_")], "fields must keep their names (no F_ prefix)"

    # The audit trail: one record for the call, one for the refused token; never the token.
    audit = audit_records(outfile)
    calls = [e for e in audit if journal_field(e, "SYSOM_TOOL") == "memgraph"]
    assert len(calls) == 1, audit
    call = calls[0]
    assert journal_field(call, "SYSOM_PRINCIPAL").startswith("plain-"), call  # a plain token's name
    assert journal_field(call, "SYSOM_AUTH") == "token"
    assert journal_field(call, "SYSOM_SCOPE") == "sysom:diagnose"
    assert journal_field(call, "SYSOM_SCOPE_DECISION") == "allowed"
    assert journal_field(call, "SYSOM_RESULT_CODE") == "Success"
    assert journal_field(call, "SYSOM_CLIENT_ADDR") == "127.0.0.1"
    assert journal_field(call, "SYSOM_TRANSPORT") == "streamable_http"
    assert journal_field(call, "SYSOM_TASK_ID") == result["task_id"]
    refused = [e for e in audit if journal_field(e, "SYSOM_SCOPE_DECISION") == "denied_auth"]
    assert refused and journal_field(refused[0], "SYSOM_RESULT_CODE") == "401", audit

    # Startup records are there too, at the right priorities.
    all_entries = entries(outfile)
    serving = [e for e in all_entries if "serving MCP" in (journal_field(e, "MESSAGE") or "")]
    assert serving and journal_field(serving[0], "PRIORITY") == "6", all_entries[:5]

    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, 15) == 0
    raw = b"".join(read_journal_capture(outfile))
    for canary in (mock.access_key_secret.encode(), BEARER.encode(), WRONG_BEARER.encode()):
        assert canary not in raw, f"secret {canary[:6]!r}... written to the journal"
    assert b"Bearer " not in raw


def test_log_journald_flag(sysom_bin, mock, config_file, procs, tmp_path, can_unshare):
    proc, port, outfile = start_in_fake_journal(procs, tmp_path, mock, config_file, ["--log", "journald"])
    # A call whose envelope carries the gateway's request id: the record has it too.
    status, out = tools_call("list_all_instances", support.MINIMAL_ARGS["list_all_instances"], port=port,
                             headers={"Authorization": f"Bearer {BEARER}"})
    assert status == 200
    request_id = out["result"]["structuredContent"]["requestId"]
    assert request_id
    rec = wait_until(lambda: tool_records(outfile, "list_all_instances"), 5, what="list_all_instances record")[0]
    assert journal_field(rec, "SYSOM_REQUEST_ID") == request_id, rec
    assert journal_field(rec, "SYSOM_UPSTREAM_ACTION") == "ListAllInstances"
    check_tool_record(proc, port, outfile, mock)
    assert "sysom_tool" not in stderr_text(proc), "journald mode also logged tool calls to stderr"


def test_journal_stream_matching_stderr(sysom_bin, mock, config_file, procs, tmp_path, can_unshare):
    """--log auto (the default): JOURNAL_STREAM = dev:ino of stderr selects journald."""
    # Procs gives each process a stderr file; its (dev, ino) is known once the file exists:
    # create the next one first to learn its identity.
    stderr_path = procs.next_stderr()
    stderr_path.write_bytes(b"")
    st = os.stat(stderr_path)
    proc, port, outfile = start_in_fake_journal(procs, tmp_path, mock, config_file, [],
                                                SYSOM_MCP_LOG=None, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    assert os.stat(proc.stderr_path).st_ino == st.st_ino
    check_tool_record(proc, port, outfile, mock)


def test_journal_stream_not_matching_logs_to_stderr(sysom_bin, mock, config_file, procs, tmp_path,
                                                    can_unshare):
    proc, port, outfile = start_in_fake_journal(procs, tmp_path, mock, config_file, [],
                                                SYSOM_MCP_LOG=None, JOURNAL_STREAM="1:2")
    status, _ = tools_call("memgraph", support.MINIMAL_ARGS["memgraph"], port=port,
                           headers={"Authorization": f"Bearer {BEARER}"})
    assert status == 200
    wait_until(lambda: "sysom_tool=memgraph" in stderr_text(proc), 5, what="tool record on stderr")
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, 15) == 0
    assert entries(outfile) == []
    err = stderr_text(proc)
    assert mock.access_key_secret not in err and BEARER not in err


def test_diagnosis_record_has_request_id(sysom_bin, mock, config_file, procs, tmp_path, can_unshare):
    proc, port, outfile = start_in_fake_journal(procs, tmp_path, mock, config_file, ["--log", "journald"])
    status, _ = tools_call("memgraph", support.MINIMAL_ARGS["memgraph"], port=port,
                           headers={"Authorization": f"Bearer {BEARER}"})
    assert status == 200
    rec = wait_until(lambda: tool_records(outfile, "memgraph"), 5, what="memgraph record")[0]
    assert journal_field(rec, "SYSOM_REQUEST_ID"), rec


def test_journald_unavailable_falls_back_to_stderr(sysom_bin, mock, config_file, procs, tmp_path,
                                                   can_unshare):
    """--log journald with no journal socket: a note, then everything on stderr; still serving."""
    port = support.free_port()
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs tmpfs /run/systemd && exec "$0" "$@"', str(support.binary_path()),
            "--streamable-http", "--port", str(port), "--config", str(config_file), "--log", "journald"]
    proc = procs.popen(argv, support.server_env(mock))
    wait_healthz(port=port, proc=proc)
    status, _ = tools_call("memgraph", support.MINIMAL_ARGS["memgraph"], port=port)
    assert status == 200
    wait_until(lambda: "sysom_tool=memgraph" in stderr_text(proc), 5, what="tool record on stderr")
    assert "journald unavailable" in stderr_text(proc)
