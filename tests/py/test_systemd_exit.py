"""Exit statuses systemd acts on (Restart=on-failure, RestartPreventExitStatus) and `sysom-mcp check`."""

from __future__ import annotations

import pytest

import support
from support import tcp_listening


def test_config_error_exits_2_in_http_mode(sysom_bin, mock, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[server]\nnot_a_setting = true\n")
    port = support.free_port()
    proc = support.run_binary(["--streamable-http", "--port", str(port), "--config", str(cfg)],
                              support.server_env(mock))
    assert proc.returncode == 2, proc.stderr
    assert "not_a_setting" in proc.stderr
    assert not tcp_listening(port)


def test_bad_flag_value_exits_2(sysom_bin, mock, config_file):
    proc = support.run_binary(["--streamable-http", "--port", "notaport", "--config", str(config_file)],
                              support.server_env(mock))
    assert proc.returncode == 2, proc.stderr


def test_busy_port_exits_1(sysom_bin, mock, config_file):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = support.run_binary(["--streamable-http", "--port", str(port), "--config", str(config_file)],
                                  support.server_env(mock))
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def run_check(mock, tmp_path, *, before: list[str] = (), after: list[str] = (), **env):
    cfg = tmp_path / "check.toml"
    if not cfg.exists():
        cfg.write_text(f"[server]\nport = {support.free_port()}\n")
    return support.run_binary(["--config", str(cfg), *before, "check", *after], support.server_env(mock, **env),
                              timeout=60)


def test_check_good_credentials(sysom_bin, mock, tmp_path):
    proc = run_check(mock, tmp_path, before=["--host", "127.0.0.1"])
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "all checks passed" in out
    assert "host     = 127.0.0.1 (flag)" in out
    assert "(config file)" in out.split("port     =")[1].splitlines()[0]
    assert f"endpoint = {mock.url}" in out and "(environment)" in out.split("endpoint =")[1].splitlines()[0]
    assert "path     = /mcp/unified" in out
    assert "access-key-id from environment ACCESS_KEY_ID" in out
    assert "signed call InitialSysom(check_only) succeeded" in out
    assert mock.requests(action="InitialSysom"), "check made no signed call"
    assert mock.access_key_secret not in out + proc.stderr


def test_check_defaults_are_labelled(sysom_bin, mock, tmp_path):
    (tmp_path / "check.toml").write_text("# nothing set\n")
    proc = run_check(mock, tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "host     = 127.0.0.1 (default)" in proc.stdout
    assert "port     = 7140 (default)" in proc.stdout


def test_check_credentials_from_credentials_directory(sysom_bin, mock, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "access-key-id").write_text(mock.access_key_id + "\n")
    (creds / "access-key-secret").write_text(mock.access_key_secret + "\n")
    proc = run_check(mock, tmp_path, ACCESS_KEY_ID=None, ACCESS_KEY_SECRET=None, CREDENTIALS_DIRECTORY=str(creds))
    assert proc.returncode == 0, proc.stdout
    line = next(x for x in proc.stdout.splitlines() if "access-key-secret from" in x)
    assert "access-key-secret" in line and "environment" not in line, line
    assert mock.access_key_secret not in proc.stdout + proc.stderr


def test_check_without_credentials(sysom_bin, mock, tmp_path):
    proc = run_check(mock, tmp_path, ACCESS_KEY_ID=None, ACCESS_KEY_SECRET=None)
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "FAIL" in out and "1 problem(s) found" in out
    assert "ACCESS_KEY_ID" in out and "ACCESS_KEY_SECRET" in out
    assert "/etc/default/sysom-mcp" in out, "the fix names where to put the variables"
    assert not mock.requests(action="InitialSysom"), "an unsigned call was attempted"


def test_check_wrong_secret(sysom_bin, mock, tmp_path):
    proc = run_check(mock, tmp_path, ACCESS_KEY_SECRET="definitely-not-the-secret")
    assert proc.returncode == 1, proc.stdout
    assert "check the AccessKey ID/secret pair" in proc.stdout
    assert "definitely-not-the-secret" not in proc.stdout + proc.stderr


def test_check_bad_config(sysom_bin, mock, tmp_path):
    (tmp_path / "check.toml").write_text("[server]\nprot = 1\n")
    proc = run_check(mock, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "prot" in proc.stdout


def test_check_accepts_options_after_the_subcommand(sysom_bin, mock, tmp_path):
    cfg = tmp_path / "after.toml"
    cfg.write_text("")
    proc = support.run_binary(["check", "--config", str(cfg)], support.server_env(mock), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_labels_flags_after_the_subcommand_and_tells_an_sts_outage_from_missing_keys(sysom_bin, mock,
                                                                                            tmp_path):
    # A flag after `check` is still a flag (clap's value source, not a scan of argv).
    proc = run_check(mock, tmp_path, after=["--host", "127.0.0.1"])
    assert "host     = 127.0.0.1 (flag)" in proc.stdout, proc.stdout
    # ram_role_arn with an STS endpoint that refuses connections: the keys are there, STS is not.
    proc = run_check(mock, tmp_path, OPENAPI_TYPE="ram_role_arn", ROLE_ARN="acs:ram::1:role/x",
                     SYSOM_STS_ENDPOINT=f"http://127.0.0.1:{support.free_port()}")
    assert proc.returncode == 1, proc.stdout
    assert "STS or ECS metadata service" in proc.stdout, proc.stdout
    assert "set the variables in /etc/default/sysom-mcp" not in proc.stdout, "an outage reported as missing keys"
    assert mock.access_key_secret not in proc.stdout + proc.stderr
