"""Native HTTPS: self-signed certificates made with the openssl CLI, the Streamable HTTP client over
TLS, HTTP/2 through ALPN, certificate reload on SIGHUP, and clear errors for bad key files."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

import support
from support import MCP_PATH, TOOLS_LIST, UID, Server, mcp_session, payload, tools_from_jsonrpc

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def make_cert(directory: Path, name: str, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def fingerprint_of_file(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def served_fingerprint(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@pytest.fixture
def certs(tmp_path):
    live = tmp_path / "live"
    cert, key = make_cert(live, "server")
    return cert, key


def tls_args(cert: Path, key: Path) -> list[str]:
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


def test_https_plain_requests(start, certs):
    cert, key = certs
    srv = start(tls_args(cert, key), tls_ca=cert)
    assert srv.url.startswith("https://")
    status, _, body = srv.request("POST", MCP_PATH, body=TOOLS_LIST, headers={"Content-Type": "application/json"})
    assert status == 200 and len(tools_from_jsonrpc(body)) == 21
    assert served_fingerprint(srv.port) == fingerprint_of_file(cert)
    # Plain HTTP on the TLS port does not get an MCP answer.
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        plain_status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        plain_status = None
    finally:
        conn.close()
    assert plain_status != 200


@pytest.mark.anyio
async def test_streamable_http_client_over_https(start, certs):
    cert, key = certs
    srv = start(tls_args(cert, key), tls_ca=cert)
    verify = ssl.create_default_context(cafile=str(cert))
    async with mcp_session("http", srv.url, verify=verify) as client:
        assert len(await client.list_tools()) == 21
        out = payload(await client.call("list_all_instances", {"uid": UID}))
        assert out["code"] == "Success"


@pytest.mark.anyio
async def test_client_rejects_untrusted_certificate(start, certs, tmp_path):
    cert, key = certs
    other, _ = make_cert(tmp_path / "other", "other")
    srv = start(tls_args(cert, key), tls_ca=cert)
    verify = ssl.create_default_context(cafile=str(other))
    with pytest.raises(BaseException):  # noqa: B017 (ssl error wrapped differently per mcp version)
        async with mcp_session("http", srv.url, verify=verify) as client:
            await client.list_tools()


def curl_http_version(url: str, *extra: str) -> str:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    proc = subprocess.run(["curl", "-k", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_version}", *extra, url],
                          capture_output=True, text=True, timeout=15)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_http2_via_alpn(start, certs):
    cert, key = certs
    srv = start(tls_args(cert, key), tls_ca=cert)
    assert curl_http_version(srv.base + "/healthz", "--http2") == "2"
    assert curl_http_version(srv.base + "/healthz", "--http1.1") == "1.1"
    # The MCP endpoint itself over HTTP/2.
    proc = subprocess.run(["curl", "-k", "-sS", "-m", "10", "--http2", "-X", "POST", srv.url,
                           "-H", "Content-Type: application/json",
                           "-d", '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'],
                          capture_output=True, text=True, timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert len(tools_from_jsonrpc(proc.stdout.encode())) == 21


def test_http2_legacy_sse_stream(start, certs):
    """The guide's `curl …/mcp/unified` over HTTPS/2: headers and the endpoint event arrive at once."""
    cert, key = certs
    srv = start(tls_args(cert, key), tls_ca=cert)
    proc = subprocess.run(["curl", "-k", "-sS", "-m", "2", "-N", "--http2", "-D", "-", srv.url],
                          capture_output=True, text=True, timeout=15)
    assert proc.returncode in (0, 28), proc.stderr
    assert proc.stdout.startswith("HTTP/2 200")
    assert "event: endpoint" in proc.stdout


def test_sighup_reloads_certificate(start, certs, tmp_path):
    cert, key = certs
    srv = start(tls_args(cert, key), tls_ca=cert)
    before = served_fingerprint(srv.port)
    assert before == fingerprint_of_file(cert)
    new_cert, new_key = make_cert(tmp_path / "renewed", "renewed", cn="renewed.localhost")
    # Renewal replaces the files in place (as certbot's deploy hook or a copy would).
    shutil.copyfile(new_key, key)
    shutil.copyfile(new_cert, cert)
    srv.sighup_and_wait()
    after = served_fingerprint(srv.port)
    assert after != before, "SIGHUP did not swap the certificate"
    assert after == fingerprint_of_file(new_cert)
    status, _, _ = srv.request("GET", "/healthz")
    assert status == 200


def test_sighup_with_mismatched_key_keeps_old_certificate(start, certs, tmp_path):
    cert, key = certs
    srv = start(tls_args(cert, key), tls_ca=cert)
    before = served_fingerprint(srv.port)
    other_cert, _ = make_cert(tmp_path / "half", "half")
    shutil.copyfile(other_cert, cert)  # new cert, old key: does not fit
    srv.sighup_and_wait(marker="reload rejected")
    assert served_fingerprint(srv.port) == before
    assert srv.proc.poll() is None


@pytest.mark.parametrize("problem", ["missing_key", "garbage_key", "missing_cert", "mismatched"])
def test_bad_tls_files_exit_with_clear_message(mock, sysom_bin, certs, tmp_path, problem):
    cert, key = certs
    if problem == "missing_key":
        key = tmp_path / "no-such.key"
        needle = str(key)
    elif problem == "garbage_key":
        key = tmp_path / "garbage.key"
        key.write_text("this is not a key\n")
        needle = str(key)
    elif problem == "missing_cert":
        cert = tmp_path / "no-such.crt"
        needle = str(cert)
    else:
        _, other_key = make_cert(tmp_path / "x", "x")
        key = other_key
        needle = "key"
    config = tmp_path / "config.toml"
    config.write_text("")
    proc = support.run_binary(["--sse", "--port", str(support.free_port()), "--config", str(config),
                               *tls_args(cert, key)], support.server_env(mock), timeout=15)
    assert proc.returncode != 0, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert "TLS" in proc.stderr or "tls" in proc.stderr, proc.stderr


def test_http2_requests_pass_the_host_allow_list(start, certs):
    """HTTP/2 has no Host header (the name travels as :authority); the allow-list must still apply."""
    cert, key = certs
    srv = start([*tls_args(cert, key), "--allowed-hosts", "localhost"], tls_ca=cert)
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    for version in ("--http1.1", "--http2"):
        ok = subprocess.run(["curl", "-k", "-sS", "-m", "10", version, "-o", "/dev/null", "-w", "%{http_code}",
                             "--resolve", f"localhost:{srv.port}:127.0.0.1", "-X", "POST",
                             f"https://localhost:{srv.port}{MCP_PATH}", "-H", "Content-Type: application/json",
                             "-d", body], capture_output=True, text=True, timeout=15)
        assert ok.stdout == "200", (version, ok.stdout, ok.stderr)
        bad = subprocess.run(["curl", "-k", "-sS", "-m", "10", version, "-o", "/dev/null", "-w", "%{http_code}",
                              "-X", "POST", f"https://127.0.0.1:{srv.port}{MCP_PATH}",
                              "-H", "Content-Type: application/json", "-d", body],
                             capture_output=True, text=True, timeout=15)
        assert bad.stdout == "403", (version, bad.stdout, bad.stderr)


def test_http2_refusals_before_the_body_reach_the_client(start, certs, tmp_path):
    """A request refused before its body is read (wrong Host, no credential) must reach an HTTP/2
    client as its status, not as a stream reset it sees while still uploading (curl: "Stream error
    in the HTTP/2 framing layer"); a body larger than one window makes the race certain."""
    cert, key = certs
    token = tmp_path / "token"
    token.write_text("s3cr3t-token-for-h2\n")
    srv = start([*tls_args(cert, key), "--allowed-hosts", "localhost", "--token-file", str(token)], tls_ca=cert)
    body = tmp_path / "body.json"
    body.write_text('{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"' + "x" * 200_000 + '"}}')
    cases = [("403", f"https://127.0.0.1:{srv.port}{MCP_PATH}", []),
             ("401", f"https://localhost:{srv.port}{MCP_PATH}", ["--resolve", f"localhost:{srv.port}:127.0.0.1"])]
    for want, url, extra in cases:
        for _ in range(5):
            r = subprocess.run(["curl", "-k", "-sS", "-m", "10", "--http2", "-o", "/dev/null", "-w", "%{http_code}",
                                *extra, "-X", "POST", url, "-H", "Content-Type: application/json",
                                "--data-binary", f"@{body}"], capture_output=True, text=True, timeout=15)
            assert (r.returncode, r.stdout) == (0, want), (want, r.returncode, r.stdout, r.stderr)
