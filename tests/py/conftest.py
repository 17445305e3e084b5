"""Fixtures for the sysom-mcp integration tests (the helpers are in support.py).

The mock SysOM server runs once per session and is reset before every test. Tests that need the
binary ask for ``env`` (a clean environment wired to the mock) and ``config_file`` (an empty TOML
file passed with --config, so /etc/sysom-mcp/config.toml of the host never leaks in), then use
``mcp_client`` (already connected) or ``support.open_session`` for custom setups; ``start``
(HTTP-mode servers) and ``procs`` (any processes) stop what they started at teardown.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "mock_sysom"))

import support  # noqa: E402
from control import MockSysom  # noqa: E402
# The fixtures that start servers and processes (and stop them at teardown).
from support import procs, start  # noqa: E402,F401

# Credentials the mock accepts; deliberately fake.
MOCK_AKID = "LTAI5tMockAccessKeyId"
MOCK_SECRET = "mock-access-key-secret-0123456789"


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def sysom_bin() -> Path:
    path = support.binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"sysom-mcp binary not found at {path}; run `cargo build` or set SYSOM_MCP_BIN", pytrace=False)
    return path


@pytest.fixture(scope="session")
def mock_server():
    server = MockSysom(access_key_id=MOCK_AKID, access_key_secret=MOCK_SECRET)
    yield server
    server.stop()


@pytest.fixture
def mock(mock_server):
    """The shared mock, reset to its default scenario with an empty request log."""
    mock_server.reset()
    return mock_server


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("# empty: every setting comes from the defaults and the environment\n")
    return path


@pytest.fixture
def env(mock, sysom_bin) -> dict[str, str]:
    return support.server_env(mock)


@pytest.fixture
async def mcp_client(env, config_file, tmp_path):
    """An initialised MCP client session with sysom-mcp --stdio (stderr in tmp_path/stderr.log)."""
    async with support.open_session(env, config=config_file, errlog_path=tmp_path / "stderr.log") as client:
        yield client
