"""Command line and configuration file contract (docs/interface.md)."""

from __future__ import annotations

import re
import time

import pytest

import support

INTERFACE_DOC = support.REPO_ROOT / "docs" / "interface.md"
ENV_NAME = re.compile(r"`([A-Z][A-Z0-9_]{2,})(?:=[^`]*)?`")


def documented_env_vars() -> set[str]:
    """Env var names from the 'env' column of the flags table and the first column of the
    credentials table of docs/interface.md."""
    names: set[str] = set()
    section = None
    for line in INTERFACE_DOC.read_text().splitlines():
        if line.startswith("| flag | env |"):
            section = "flags"
            continue
        if line.startswith("| env (first match wins)"):
            section = "credentials"
            continue
        if not line.startswith("|"):
            section = None
            continue
        if section is None or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.replace("\\|", "/").strip("|").split("|")]  # "\|" is a literal pipe
        cell = cells[1] if section == "flags" else cells[0]
        names.update(ENV_NAME.findall(cell))
    return names


def test_interface_doc_parsing_finds_the_variables():
    names = documented_env_vars()
    assert {"SYSOM_ENDPOINT", "SYSOM_MCP_CONFIG", "ACCESS_KEY_ID", "OPENAPI_ACCESS_KEY_SECRET",
            "DASHSCOPE_API_KEY", "RUST_LOG", "SYSOM_MCP_POLL_INTERVAL_MS", "SYSOM_MCP_LOG"} <= names, names


def test_help_mentions_every_env_var(sysom_bin, mock):
    proc = support.run_binary(["--help"], support.server_env(mock))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    missing = sorted(n for n in documented_env_vars() if n not in text)
    assert not missing, f"--help does not mention: {missing}"
    idx = text.index("DASHSCOPE_API_KEY")
    assert re.search(r"ignored", text[max(0, idx - 200): idx + 300], re.I), "--help must say DASHSCOPE_API_KEY is ignored"


def test_version(sysom_bin, mock):
    proc = support.run_binary(["--version"], support.server_env(mock))
    assert proc.returncode == 0
    assert re.match(r"^sysom-mcp \d+\.\d+\.\d+", proc.stdout.strip()), proc.stdout


@pytest.mark.parametrize("toml,key", [
    ("bogus_setting = 1\n", "bogus_setting"),
    ("[server]\nbogus_port = 7140\n", "bogus_port"),
    ("[upstream]\nread_timeout = 5\n", "read_timeout"),
])
def test_unknown_config_key_is_an_error(sysom_bin, mock, tmp_path, toml, key):
    cfg = tmp_path / "config.toml"
    cfg.write_text(toml)
    proc = support.run_binary(["--stdio", "--config", str(cfg)], support.server_env(mock))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert key in proc.stderr
    assert proc.stdout == "", "errors go to stderr, stdout is the protocol stream"


def test_missing_explicit_config_file_is_an_error(sysom_bin, mock, tmp_path):
    proc = support.run_binary(["--stdio", "--config", str(tmp_path / "absent.toml")], support.server_env(mock))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "absent.toml" in proc.stderr


def test_bad_value_names_the_key(sysom_bin, mock, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[diagnosis]\npoll_interval_ms = \"fast\"\n")
    proc = support.run_binary(["--stdio", "--config", str(cfg)], support.server_env(mock))
    assert proc.returncode == 2 and "poll_interval_ms" in proc.stderr, proc.stderr


@pytest.mark.anyio
async def test_config_file_values_apply(sysom_bin, mock, tmp_path):
    """A valid file is accepted and its values are used (here diagnosis.timeout_secs)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text("[upstream]\nread_timeout_ms = 5000\n\n[diagnosis]\ntimeout_secs = 1\npoll_interval_ms = 50\n")
    mock.scenario(diagnosis={"final": "never"})
    env = support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT=None, SYSOM_MCP_POLL_INTERVAL_MS=None)
    async with support.open_session(env, config=cfg) as client:
        t0 = time.monotonic()
        out = support.payload(await client.call("loadtask", support.MINIMAL_ARGS["loadtask"]))
        elapsed = time.monotonic() - t0
    assert out["code"] == "TaskTimeout"
    assert 0.8 <= elapsed < 4, f"config diagnosis.timeout_secs = 1 not applied ({elapsed:.1f}s)"


@pytest.mark.anyio
async def test_environment_beats_config_file(sysom_bin, mock, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[diagnosis]\ntimeout_secs = 30\n")
    mock.scenario(diagnosis={"final": "never"})
    env = support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT="1")
    async with support.open_session(env, config=cfg) as client:
        t0 = time.monotonic()
        out = support.payload(await client.call("loadtask", support.MINIMAL_ARGS["loadtask"]))
    assert out["code"] == "TaskTimeout" and time.monotonic() - t0 < 4
