# Step 12 of test.sh (sourced): the shipped nginx examples, followed as their comments say.
#  A: nginx-two-instances.conf + the sysom-mcp@.socket/.service templates (instances 7141, 7142,
#     --stateless): one client's Streamable HTTP calls through nginx :7140 reach both instances.
#  B: nginx-tls.conf in front of sysom-mcp.socket (loopback drop-in, trusted_proxies,
#     allowed_hosts as the example says), self-signed certificate for mcp.example.com: the
#     guide's SSE client carries a session end to end over https, verifying against the cert.

EX=/usr/share/doc/sysom-mcp/examples

nginx_site() {  # nginx_site FILE: make FILE the only enabled site (Debian layout)
    rm -f /etc/nginx/sites-enabled/*
    cp "$1" /etc/nginx/sites-available/sysom-mcp
    ln -sf /etc/nginx/sites-available/sysom-mcp /etc/nginx/sites-enabled/sysom-mcp
}
tool_calls_logged() {  # tool_calls_logged UNIT CURSORFILE -> number of SYSOM_TOOL records since
    journalctl -b --no-pager -u "$1" --after-cursor="$(cat "$2")" SYSOM_TOOL=memgraph -o cat 2>/dev/null | wc -l
}

nginx_step() {
    JUNITS+=(nginx.service sysom-mcp@7141.service sysom-mcp@7142.service)
    if ! dpkg-query -W sysom-mcp >/dev/null 2>&1; then
        ck "install the .deb again" apt-get install -y "$DEB"
    fi
    configure
    local f
    for f in nginx-two-instances.conf nginx-tls.conf sysom-mcp@.socket sysom-mcp@.service; do
        ck "example $f shipped in $EX" test -f "$EX/$f" || { return; }
    done
    ck "config.toml: trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]" \
        sed -i 's|^#trusted_proxies = .*|trusted_proxies = ["127.0.0.1/32", "::1/128"]|' /etc/sysom-mcp/config.toml

    # ---- A: two stateless instances behind round robin ----
    say "  -- A: nginx-two-instances.conf"
    systemctl disable --now sysom-mcp.socket sysom-mcp.service >/dev/null 2>&1
    cp "$EX/sysom-mcp@.socket" "$EX/sysom-mcp@.service" /etc/systemd/system/
    systemctl daemon-reload
    ck "enable --now sysom-mcp@7141.socket sysom-mcp@7142.socket" \
        systemctl enable --now sysom-mcp@7141.socket sysom-mcp@7142.socket
    nginx_site "$EX/nginx-two-instances.conf"
    ck "nginx -t (two instances)" nginx -t
    ck "start nginx" systemctl restart nginx
    ck "nginx listens on :7140" wait_until 10 port_listening 7140
    local c
    c=$(mktemp); cursor "$c"
    ckv "one client, 6 Streamable HTTP memgraph calls via nginx" \
        client http --url http://127.0.0.1:7140/mcp/unified --token "$TOKEN" --list \
            --expect-tools "$EXPECTED_TOOLS" --call memgraph --args "$MEMGRAPH_ARGS" --repeat 6
    local n1 n2
    # journald may lag behind the last call by a moment
    wait_until 5 bash -c "[ \$(( \$(journalctl -b -q --no-pager --after-cursor='$(cat "$c")' SYSOM_TOOL=memgraph -o cat | wc -l) )) -ge 6 ]"
    n1=$(tool_calls_logged sysom-mcp@7141.service "$c")
    n2=$(tool_calls_logged sysom-mcp@7142.service "$c")
    say "  memgraph records: instance 7141: $n1, instance 7142: $n2"
    ck "instance 7141 served calls" test "$n1" -gt 0
    ck "instance 7142 served calls" test "$n2" -gt 0
    ck "both instances socket-activated" bash -c 'systemctl is-active -q sysom-mcp@7141.service && systemctl is-active -q sysom-mcp@7142.service'
    ck "curl tools/list via nginx" tools_list_is_21 "$TOKEN" http://127.0.0.1:7140/mcp/unified
    systemctl disable --now sysom-mcp@7141.socket sysom-mcp@7142.socket sysom-mcp@7141.service \
        sysom-mcp@7142.service >/dev/null 2>&1
    rm -f "$c"

    # ---- B: TLS reverse proxy carrying a legacy SSE session ----
    say "  -- B: nginx-tls.conf"
    local crt key
    crt=$(sed -n 's/^ *ssl_certificate  *\([^;]*\);.*/\1/p' "$EX/nginx-tls.conf" | head -1)
    key=$(sed -n 's/^ *ssl_certificate_key  *\([^;]*\);.*/\1/p' "$EX/nginx-tls.conf" | head -1)
    ck "self-signed certificate for mcp.example.com ($crt)" \
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mcp.example.com \
            -addext subjectAltName=DNS:mcp.example.com -keyout "$key" -out "$crt"
    grep -q 'mcp.example.com' /etc/hosts || echo '127.0.0.1 mcp.example.com' >> /etc/hosts
    # the sysom-mcp side, as the example's comments say
    mkdir -p /etc/systemd/system/sysom-mcp.socket.d
    printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:7140\n' > /etc/systemd/system/sysom-mcp.socket.d/loopback.conf
    ck "config.toml: allowed_hosts = [\"mcp.example.com\"]" \
        sed -i 's|^#allowed_hosts = .*|allowed_hosts = ["mcp.example.com"]|' /etc/sysom-mcp/config.toml
    nginx_site "$EX/nginx-tls.conf"
    systemctl stop nginx
    systemctl daemon-reload
    ck "enable --now sysom-mcp.socket (127.0.0.1:7140)" systemctl enable --now sysom-mcp.socket
    ck "socket on 127.0.0.1:7140 only" bash -c 'ss -Htln "sport = :7140" | tee /dev/stderr | grep -q "127.0.0.1:7140" && ! ss -Htln "sport = :7140" | grep -qv "127.0.0.1:7140"'
    ck "nginx -t (tls)" nginx -t
    ck "start nginx" systemctl start nginx
    ck "nginx listens on :443" wait_until 10 port_listening 443
    ck "http://mcp.example.com redirects to https" bash -c \
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://mcp.example.com/mcp/unified | tee /dev/stderr | grep -q '^301 https://mcp.example.com/'"
    CURL_EXTRA="--cacert $crt"
    ck "curl tools/list over https (verified against the cert)" tools_list_is_21 "$TOKEN" https://mcp.example.com/mcp/unified
    CURL_EXTRA=
    ckv "guide's sse_client over https: session, 21 tools, memgraph with progress" \
        client sse --url https://mcp.example.com/mcp/unified --cafile "$crt" --token "$TOKEN" \
            --list --expect-tools "$EXPECTED_TOOLS" --call memgraph --args "$MEMGRAPH_ARGS" --min-progress 1
    ck "streamable HTTP client over https" \
        client http --url https://mcp.example.com/mcp/unified --cafile "$crt" --token "$TOKEN" \
            --list --expect-tools "$EXPECTED_TOOLS"
    ck "wrong token through the proxy -> 401" bash -c \
        "test \"\$(curl -s --cacert '$crt' -o /dev/null -w '%{http_code}' -X POST https://mcp.example.com/mcp/unified -H 'Content-Type: application/json' -H 'Authorization: Bearer nope' -d '{}')\" = 401"
    ck "direct request with Host 127.0.0.1:7140 refused (allowed_hosts)" bash -c \
        "code=\$(curl -s -o /dev/null -w '%{http_code}' -X POST $URL -H 'Content-Type: application/json' -H 'Authorization: Bearer $TOKEN' -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{}}'); echo \$code >&2; [ \"\$code\" -ge 400 ]"
}
