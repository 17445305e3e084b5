#!/bin/bash
# sysom-mcp end-to-end steps, run inside the booted guest by e2e-runner.service.
# /e2e (bound from the host) holds: env, pkg/*.deb|rpm, pkg/upgrade/*.deb, mock_sysom/, guest/, out/.
# Every step prints "PASS: <step>" or "FAIL: <step> (<failed checks>)" and appends it to
# /e2e/out/results; a failing step prints the relevant part of the guest journal; the run goes on.
# Secrets (token, AccessKey secret) are never printed: this output goes to the journal that
# step 6 searches for them.
set -u   # no pipefail: `producer | grep -q` would fail when grep exits early
. /e2e/env

OUT=/e2e/out
RES=$OUT/results
: > "$RES"
G=/e2e/guest
PY=/opt/e2e-venv/bin/python
export DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C.UTF-8
URL=http://127.0.0.1:7140/mcp/unified
CRED=/etc/sysom-mcp/credentials
MOCK_PORT=18080
T0=$(date +%s)

rand() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
TOKEN=e2etok-$(rand 16)
AK_ID=LTAIe2e$(rand 6)
AK_SECRET=e2esecret-$(rand 16)
MEMGRAPH_ARGS='{"uid":"123","region":"cn-hangzhou","channel":"ecs","instance":"i-xxx"}'

# ---------------------------------------------------------------------------------------
# helpers
STEP= STEP_T0=0
declare -a ERRS=()
# unit names whose journal a failing step prints
JUNITS=(sysom-mcp.service sysom-mcp.socket)

say() { printf '%s\n' "$*"; }
begin() {
    STEP=$1 STEP_T0=$(date +%s) ERRS=()
    say "" "=== [$(( STEP_T0 - T0 ))s] step $STEP"
}
# ck DESCRIPTION CMD...: run CMD, record DESCRIPTION as failed when it fails (output shown then)
ck() {
    local d=$1 o rc
    shift
    o=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        say "  ok   $d"
    else
        say "  FAIL $d (rc $rc)"
        [ -n "$o" ] && printf '%s\n' "$o" | tail -n 25 | sed 's/^/       | /'
        ERRS+=("$d")
    fi
    return $rc
}
# ckv: like ck, but always shows the command's output
ckv() {
    local d=$1 o rc
    shift
    o=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then say "  ok   $d"; else say "  FAIL $d (rc $rc)"; ERRS+=("$d"); fi
    [ -n "$o" ] && printf '%s\n' "$o" | tail -n 25 | sed 's/^/       > /'
    return $rc
}
# client sse|http ARGS...: run the python MCP client, print its JSON lines shortened (tools/list
# as a count), return its exit status
client() {
    local kind=$1 o rc
    shift
    o=$("$PY" "$G/${kind}_client.py" "$@" 2>&1)
    rc=$?
    printf '%s\n' "$o" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        d = json.loads(line)
    except ValueError:
        print(line.rstrip()[:300]); continue
    if d.get("op") == "tools/list":
        d["names"] = "%d names" % len(d["names"])
    print(json.dumps(d, ensure_ascii=False)[:300])'
    return $rc
}
note() { say "  note $*"; printf 'NOTE: %s: %s\n' "$STEP" "$*" >> "$RES"; }
finish() {
    local secs=$(( $(date +%s) - STEP_T0 ))
    if [ ${#ERRS[@]} -eq 0 ]; then
        say "PASS: $STEP (${secs}s)"
        printf 'PASS: %s (%ss)\n' "$STEP" "$secs" >> "$RES"
    else
        local IFS=';'
        say "FAIL: $STEP (${ERRS[*]})"
        printf 'FAIL: %s (%s)\n' "$STEP" "${ERRS[*]}" >> "$RES"
        show_journal
    fi
}
show_journal() {
    local u args=()
    for u in "${JUNITS[@]}"; do args+=(-u "$u"); done
    say "  ---- guest journal (${JUNITS[*]}, last 60 lines) ----"
    journalctl -b --no-pager -o short-precise -n 60 "${args[@]}" 2>&1 | sed 's/^/  | /'
    say "  ---- systemd (PID 1), last 15 lines ----"
    journalctl -b --no-pager -o short-precise -n 15 _PID=1 2>&1 | sed 's/^/  | /'
    say "  ----"
}
# wait_until SECONDS CMD...: poll CMD every 0.2 s
wait_until() {
    local end=$(( $(date +%s) + $1 ))
    shift
    while ! "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.2
    done
}
want_steps() { [ -z "${E2E_STEPS:-}" ] || [[ " $E2E_STEPS " == *" $1 "* ]]; }

is_state() { local s; s=$(systemctl is-active "$1" 2>&1); [ "$s" = "$2" ] || { echo "$1 is $s" >&2; return 1; }; }
is_enabled() { local s; s=$(systemctl is-enabled "$1" 2>&1); [ "$s" = "$2" ] || { echo "$1 is $s" >&2; return 1; }; }
show() { systemctl show -p "$2" --value "$1"; }
port_listening() { ss -Htln "sport = :$1" | grep -q .; }
port_owned_by_systemd() { ss -Htlnp "sport = :$1" | tee /dev/stderr | grep -q '"systemd",pid=1,'; }

# curl_tools_list TOKEN [URL] -> prints the number of tools in a JSON tools/list answer
curl_tools_list() {
    local tok=$1 url=${2:-$URL} hdr body
    hdr=$(mktemp) body=$(mktemp)
    curl -sS --max-time 20 -o "$body" -D "$hdr" -X POST "$url" -H "Content-Type: application/json" \
        ${tok:+-H "Authorization: Bearer $tok"} \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}' ${CURL_EXTRA:-} || { rm -f "$hdr" "$body"; return 1; }
    python3 - "$hdr" "$body" <<'EOF'
import json, sys
hdr = open(sys.argv[1], errors="replace").read()
body = open(sys.argv[2], errors="replace").read()
status = hdr.split("\r\n", 1)[0]
ctype = [l.split(":", 1)[1].strip() for l in hdr.splitlines() if l.lower().startswith("content-type:")]
if " 200" not in status:
    sys.exit(f"status: {status}; body: {body[:300]}")
if not ctype or not ctype[-1].startswith("application/json"):
    sys.exit(f"content-type {ctype} (want application/json); body: {body[:300]}")
msg = json.loads(body)
tools = msg["result"]["tools"]
print(len(tools))
EOF
    local rc=$?
    rm -f "$hdr" "$body"
    return $rc
}
# With credentials the packaged server lists the 21 cloud tools and the local ones.
LOCAL_TOOLS=11
EXPECTED_TOOLS=$((21 + LOCAL_TOOLS))
tools_list_is_21() { [ "$(curl_tools_list "$@")" = "$EXPECTED_TOOLS" ]; }
# http_status TOKEN -> prints the HTTP status of a tools/list POST; the 401 details go to stderr
http_status_401() {
    local tok=$1 hdr
    hdr=$(mktemp)
    code=$(curl -sS --max-time 10 -o /dev/null -D "$hdr" -w '%{http_code}' -X POST "$URL" \
        -H "Content-Type: application/json" ${tok:+-H "Authorization: Bearer $tok"} \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}')
    local www
    www=$(grep -i '^www-authenticate:' "$hdr" | tr -d '\r')
    rm -f "$hdr"
    echo "status $code; $www" >&2
    [ "$code" = 401 ] && [[ "$www" == *Bearer* ]]
}

# set_env FILE KEY VALUE: set KEY=VALUE in an environment file (replacing a commented default)
set_env() {
    local f=$1 k=$2 v=$3
    touch "$f"
    if grep -qE "^#?${k}=" "$f"; then
        sed -i -E "s|^#?${k}=.*|${k}=${v}|" "$f"
    else
        printf '%s=%s\n' "$k" "$v" >> "$f"
    fi
}
env_file() {  # the environment file of the installed package flavour
    if [ -f /etc/sysconfig/sysom-mcp ] && ! [ -f /etc/default/sysom-mcp ]; then
        echo /etc/sysconfig/sysom-mcp
    else
        echo /etc/default/sysom-mcp
    fi
}
# configure: credentials and endpoint as the packaged env file tells admins to
configure() {
    install -d -m 0700 "$CRED"
    printf '%s\n' "$TOKEN" | install -m 0600 /dev/stdin "$CRED/mcp-tokens"
    printf '%s' "$AK_ID" | install -m 0600 /dev/stdin "$CRED/access-key-id"
    printf '%s' "$AK_SECRET" | install -m 0600 /dev/stdin "$CRED/access-key-secret"
    set_env "$(env_file)" SYSOM_ENDPOINT "http://127.0.0.1:$MOCK_PORT"
}
mode_is() { [ "$(stat -c %a "$1")" = "$2" ]; }

sse() { "$PY" "$G/sse_client.py" "$@"; }
http() { "$PY" "$G/http_client.py" "$@"; }
journal_has() {  # journal_has UNIT SINCE_CURSOR_FILE PATTERN
    journalctl -b --no-pager -u "$1" --after-cursor="$(cat "$2")" 2>/dev/null | grep -qE "$3"
}
cursor() { journalctl -b -n 0 --show-cursor --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p' > "$1"; }
main_pid() { show sysom-mcp.service MainPID; }

# ---------------------------------------------------------------------------------------
say "sysom-mcp e2e in $(hostname) ($(. /etc/os-release; echo "$PRETTY_NAME"), systemd $(systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p'))"
say "package: $DEB (version $DEB_VERSION); rpm: ${RPM:-none}"
say "python mcp client: $("$PY" -c 'import importlib.metadata as m; print(m.version("mcp"))')"
wait_until 60 sh -c 'systemctl is-system-running | grep -qE "running|degraded"' \
    || say "warning: system not running after 60 s: $(systemctl is-system-running)"

# ---------------------------------------------------------------------------------------
step1() {
    begin "1 apt install ./sysom-mcp_*.deb: units installed, socket disabled and inactive"
    ck "apt-get install $DEB" apt-get install -y "$DEB"
    ck "sysom-mcp.service installed" systemctl cat sysom-mcp.service
    ck "sysom-mcp.socket installed" systemctl cat sysom-mcp.socket
    ck "socket disabled" is_enabled sysom-mcp.socket disabled
    ck "socket inactive" is_state sysom-mcp.socket inactive
    ck "service inactive" is_state sysom-mcp.service inactive
    ck "nothing listens on :7140" bash -c '! ss -Htln "sport = :7140" | grep -q .'
    ck "sysom-mcp --version" /usr/bin/sysom-mcp --version
    say "  $(/usr/bin/sysom-mcp --version 2>&1 | head -1)"
    finish
}

# ---------------------------------------------------------------------------------------
step2() {
    begin "2 configure: token + AccessKey credential files (0600), SYSOM_ENDPOINT=mock in the env file"
    JUNITS+=(mock-sysom.service)
    if [ -f /e2e/mock_sysom/mock_sysom.py ]; then
        # Output to a file, not the journal: journald would store the mock's command line
        # (with the AccessKey secret) as _CMDLINE, and step 6 checks the journal for the secret.
        ck "start mock SysOM (systemd-run)" systemd-run --unit=mock-sysom --description="mock SysOM OpenAPI" \
            -p Type=exec -p StandardOutput=file:/run/mock-sysom.log -p StandardError=file:/run/mock-sysom.log \
            /usr/bin/python3 /e2e/mock_sysom/mock_sysom.py --host 127.0.0.1 --port "$MOCK_PORT" \
            --access-key-id "$AK_ID" --access-key-secret "$AK_SECRET" --port-file /run/mock-sysom.port
        ck "mock listening on :$MOCK_PORT" wait_until 20 test -s /run/mock-sysom.port
    else
        ck "tests/mock_sysom/mock_sysom.py staged" false
    fi
    configure
    ck "mcp-tokens 0600" mode_is "$CRED/mcp-tokens" 600
    ck "access-key-id 0600" mode_is "$CRED/access-key-id" 600
    ck "access-key-secret 0600" mode_is "$CRED/access-key-secret" 600
    ck "SYSOM_ENDPOINT in $(env_file)" grep -q "^SYSOM_ENDPOINT=http://127.0.0.1:$MOCK_PORT\$" "$(env_file)"
    # `sysom-mcp check` as the env file suggests, with the credentials the unit would load
    ck "sysom-mcp check" bash -c "set -a; . $(env_file); CREDENTIALS_DIRECTORY=$CRED /usr/bin/sysom-mcp check"
    finish
}

# ---------------------------------------------------------------------------------------
step3() {
    begin "3 systemctl enable --now sysom-mcp.socket: :7140 held by systemd, service inactive"
    ck "enable --now" systemctl enable --now sysom-mcp.socket
    ck "socket enabled" is_enabled sysom-mcp.socket enabled
    ck "socket active" is_state sysom-mcp.socket active
    ck "ss -tlnp: :7140 held by systemd" port_owned_by_systemd 7140
    sleep 1
    ck "service still inactive" is_state sysom-mcp.service inactive
    finish
}

# ---------------------------------------------------------------------------------------
step4() {
    begin "4 guide's Python sse_client: activation, status, 21 tools, memgraph with progress"
    ckv "sse_client: list 21 tools + memgraph call with >=1 progress" \
        client sse --url "$URL" --token "$TOKEN" --list --expect-tools "$EXPECTED_TOOLS" \
            --call memgraph --args "$MEMGRAPH_ARGS" --min-progress 1
    ck "service active (socket-activated)" is_state sysom-mcp.service active
    local st
    st=$(systemctl status --no-pager -n 0 sysom-mcp.service 2>&1)
    printf '%s\n' "$st" | sed 's/^/  | /'
    ck "status shows TriggeredBy: sysom-mcp.socket" grep -q 'TriggeredBy:.*sysom-mcp.socket' <<<"$st"
    ck "status shows a Status: line" grep -q '^ *Status: "' <<<"$st"
    finish
}

# ---------------------------------------------------------------------------------------
step5() {
    begin "5 Streamable HTTP: guide's curl tools/list (JSON, 21 tools), python client, 401 on bad token"
    local n
    n=$(curl_tools_list "$TOKEN" 2>&1)
    say "  curl -X POST $URL (Content-Type: application/json, bearer) -> $n tools"
    ck "curl tools/list returns 21 tools as JSON" tools_list_is_21 "$TOKEN"
    ck "missing token -> 401 + WWW-Authenticate: Bearer" http_status_401 ""
    ck "wrong token -> 401" http_status_401 "wrong-$(rand 8)"
    ck "guide's 'curl $URL' (GET, bearer) opens an SSE stream with an endpoint event" \
        bash -c "curl -sN --max-time 3 -H 'Authorization: Bearer $TOKEN' '$URL' | grep -m1 -q '^event: endpoint'"
    ckv "python streamable HTTP client: 21 tools + memgraph with progress" \
        client http --url "$URL" --token "$TOKEN" --list --expect-tools "$EXPECTED_TOOLS" \
            --call memgraph --args "$MEMGRAPH_ARGS" --min-progress 1
    ck "/healthz without token -> 200" curl -sf --max-time 5 http://127.0.0.1:7140/healthz
    finish
}

# ---------------------------------------------------------------------------------------
audit_recorded() {  # the memgraph calls' audit records name a principal and an allowed decision
    journalctl -b --no-pager -u sysom-mcp SYSOM_AUDIT=1 SYSOM_TOOL=memgraph -o json | python3 -c '
import json, sys
recs = [json.loads(l) for l in sys.stdin if l.strip()]
print("  > " + json.dumps({k: v for k, v in (recs[0] if recs else {}).items() if k.startswith("SYSOM_")})[:400])
ok = recs and all(r.get("SYSOM_PRINCIPAL") and r.get("SYSOM_SCOPE_DECISION") == "allowed"
                  and r.get("SYSOM_SCOPE") == "sysom:diagnose" for r in recs)
sys.exit(0 if ok else 1)'
}

step6() {
    begin "6 journal: SYSOM_TOOL=memgraph record and its audit record; no secret in the journal"
    local recs
    recs=$(journalctl -b --no-pager -u sysom-mcp SYSOM_TOOL=memgraph -o json 2>/dev/null)
    ck "journalctl -u sysom-mcp SYSOM_TOOL=memgraph finds the call" test -n "$recs"
    printf '%s\n' "$recs" | head -3 | python3 -c '
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    print("  > " + json.dumps({k: v for k, v in d.items() if k == "MESSAGE" or k.startswith("SYSOM_")}, ensure_ascii=False)[:400])'
    ckv "audit: journalctl -u sysom-mcp SYSOM_AUDIT=1 SYSOM_TOOL=memgraph names the principal" audit_recorded
    journalctl --flush 2>/dev/null
    ck "AccessKey secret not in journalctl -o verbose" bash -c "! journalctl --no-pager -o verbose | grep -aqF '$AK_SECRET'"
    ck "AccessKey secret not in journalctl -o export" bash -c "! journalctl --no-pager -o export | grep -aqF '$AK_SECRET'"
    ck "bearer token not in journalctl -o verbose" bash -c "! journalctl --no-pager -o verbose | grep -aqF '$TOKEN'"
    ck "bearer token not in journalctl -o export" bash -c "! journalctl --no-pager -o export | grep -aqF '$TOKEN'"
    finish
}

# ---------------------------------------------------------------------------------------
step7() {
    begin "7 watchdog: SIGSTOP main PID -> watchdog timeout, restart, next request served"
    say "  (drop-in /etc/systemd/system/sysom-mcp.service.d/e2e-watchdog.conf sets WatchdogSec=5s instead of the unit's 30s to keep the test fast)"
    mkdir -p /etc/systemd/system/sysom-mcp.service.d
    printf '[Service]\nWatchdogSec=5s\n' > /etc/systemd/system/sysom-mcp.service.d/e2e-watchdog.conf
    systemctl daemon-reload
    ck "restart with WatchdogSec=5s" systemctl restart sysom-mcp.service
    ck "WatchdogUSec=5s" test "$(show sysom-mcp.service WatchdogUSec)" = 5s
    local n0 pid c
    n0=$(show sysom-mcp.service NRestarts)
    pid=$(main_pid)
    sleep 8   # > WatchdogSec: the server must ping at WATCHDOG_USEC/2, not at a fixed period
    ck "stays up for 8 s with WatchdogSec=5s (pings often enough)" \
        test "$(main_pid)" = "$pid" -a "$(show sysom-mcp.service NRestarts)" = "$n0"
    pid=$(main_pid)
    c=$(mktemp); cursor "$c"
    if [ -n "$pid" ] && [ "$pid" -gt 1 ]; then
        say "  kill -STOP $pid"
        kill -STOP "$pid"
        ck "systemd logs the watchdog timeout" wait_until 30 journal_has sysom-mcp.service "$c" 'Watchdog timeout'
        ck "service failed with result 'watchdog'" wait_until 10 journal_has sysom-mcp.service "$c" "Failed with result 'watchdog'"
        ck "service restarted (NRestarts grew, new PID, active)" wait_until 30 bash -c \
            "[ \$(systemctl show -p NRestarts --value sysom-mcp) -gt $n0 ] && [ \$(systemctl is-active sysom-mcp) = active ] && [ \$(systemctl show -p MainPID --value sysom-mcp) != $pid ]"
        journalctl -b --no-pager -o cat -u sysom-mcp.service --after-cursor="$(cat "$c")" 2>/dev/null \
            | grep -E 'Watchdog|watchdog|Scheduled restart|Started|Stopped' | head -6 | sed 's/^/  | /'
    else
        ck "service has a MainPID to stop" false
    fi
    ck "next request served" tools_list_is_21 "$TOKEN"
    rm -f /etc/systemd/system/sysom-mcp.service.d/e2e-watchdog.conf "$c"
    systemctl daemon-reload
    systemctl restart sysom-mcp.service
    finish
}

# ---------------------------------------------------------------------------------------
step8() {
    begin "8 reload with an SSE session open; token rotation as documented"
    # What the packaged environment file tells admins: newer packages re-read mcp-tokens on
    # `systemctl reload`, older ones needed a restart (LoadCredential= copies).
    local how=restart
    grep -qi 're-read by .systemctl reload' "$(env_file)" && how=reload
    say "  documented token rotation in $(env_file): $how"
    local o ready=/tmp/e2e-ready go=/tmp/e2e-go pid cpid rc c new
    new=e2etok2-$(rand 16)
    o=$(mktemp); rm -f "$ready" "$go"
    "$PY" "$G/sse_client.py" --url "$URL" --token "$TOKEN" --call memgraph --args "$MEMGRAPH_ARGS" \
        --ready-file "$ready" --go-file "$go" --timeout 120 > "$o" 2>&1 &
    cpid=$!
    ck "SSE session open, first call done" wait_until 60 test -e "$ready"
    pid=$(main_pid)
    # rotation, step 1: add the new token next to the old one
    printf '%s\n%s\n' "$TOKEN" "$new" | install -m 0600 /dev/stdin "$CRED/mcp-tokens"
    c=$(mktemp); cursor "$c"
    ck "systemctl reload sysom-mcp" systemctl reload sysom-mcp.service
    ck "same main PID after reload, service active" test "$(main_pid)" = "$pid" -a "$(systemctl is-active sysom-mcp)" = active
    ck "systemd logged 'Reloaded sysom-mcp.service'" wait_until 5 journal_has sysom-mcp.service "$c" 'Reloaded sysom-mcp.service'
    ck "the server itself logged the reload (SIGHUP handled)" wait_until 5 bash -c \
        "journalctl -b -q --no-pager _PID=$pid --after-cursor='$(cat "$c")' -o cat | grep ."
    journalctl -b -q --no-pager _PID="$pid" --after-cursor="$(cat "$c")" -o cat 2>/dev/null | head -3 | sed 's/^/  | /'
    rm -f "$c"
    touch "$go"
    wait "$cpid"; rc=$?
    sed 's/^/  > /' "$o" | cut -c1-300
    ck "call on the same SSE session after the reload works" test "$rc" = 0
    rm -f "$o" "$ready" "$go"

    if [ "$how" = reload ]; then
        ck "new token accepted after the reload" tools_list_is_21 "$new"
    else
        if tools_list_is_21 "$new" 2>/dev/null; then
            note "a token added to $CRED/mcp-tokens is accepted after a reload alone"
        else
            note "a token added to $CRED/mcp-tokens is not accepted after a reload (documented: restart)"
        fi
        ck "restart after adding the new token" systemctl restart sysom-mcp.service
        ck "new token accepted" tools_list_is_21 "$new"
    fi
    ck "old token still accepted while listed" tools_list_is_21 "$TOKEN"
    # rotation, step 2: drop the old token
    printf '%s\n' "$new" | install -m 0600 /dev/stdin "$CRED/mcp-tokens"
    ck "systemctl $how after removing the old token" systemctl "$how" sysom-mcp.service
    ck "old token -> 401" http_status_401 "$TOKEN"
    ck "new token accepted" tools_list_is_21 "$new"
    [ "$how" = reload ] && ck "still the same main PID" test "$(main_pid)" = "$pid"
    TOKEN=$new
    finish
}

# ---------------------------------------------------------------------------------------
step9() {
    begin "9 firewalld service sysom-mcp opens tcp 7140; ufw app profile"
    JUNITS+=(firewalld.service)
    ck "start firewalld" systemctl start firewalld
    ck "firewalld running" wait_until 60 sh -c 'firewall-cmd --state | grep -q running'
    ck "firewall-cmd --info-service=sysom-mcp lists 7140/tcp" \
        bash -c 'firewall-cmd --info-service=sysom-mcp | tee /dev/stderr | grep -q "ports: 7140/tcp"'
    ck "firewall-cmd --permanent --add-service=sysom-mcp" firewall-cmd --permanent --add-service=sysom-mcp
    ck "firewall-cmd --reload" firewall-cmd --reload
    ck "nft list ruleset has tcp dport 7140" bash -c "nft list ruleset | grep 'tcp dport 7140' | tee /dev/stderr | grep -q ."
    nft list ruleset 2>/dev/null | grep 'tcp dport 7140' | head -2 | sed 's/^/  | /'
    ck "still served with firewalld up" tools_list_is_21 "$TOKEN"
    ck "ufw app info sysom-mcp" bash -c 'ufw app info sysom-mcp | tee /dev/stderr | grep -q 7140/tcp'
    ufw app info sysom-mcp 2>&1 | sed 's/^/  | /'
    # leave the zone clean (firewalld keeps running for steps 10 and 11)
    firewall-cmd -q --permanent --remove-service=sysom-mcp; firewall-cmd -q --reload
    finish
}

# ---------------------------------------------------------------------------------------
step10() {
    begin "10 apt remove / purge / reinstall / upgrade keeps an edited config"
    ck "apt-get remove" apt-get remove -y sysom-mcp
    ck "socket not active after remove" bash -c '! systemctl is-active -q sysom-mcp.socket'
    ck "service not active after remove" bash -c '! systemctl is-active -q sysom-mcp.service'
    ck "port 7140 closed" bash -c '! ss -Htln "sport = :7140" | grep -q .'
    ck "socket not enabled after remove" bash -c '! systemctl is-enabled -q sysom-mcp.socket'
    ck "binary gone" test ! -e /usr/bin/sysom-mcp
    ck "config kept after remove" test -f /etc/sysom-mcp/config.toml
    ck "apt-get purge" apt-get purge -y sysom-mcp
    ck "config.toml removed by purge" test ! -e /etc/sysom-mcp/config.toml
    ck "/etc/default/sysom-mcp removed by purge" test ! -e /etc/default/sysom-mcp
    ck "no enablement symlink left" bash -c '! ls /etc/systemd/system/*/sysom-mcp.* 2>/dev/null | grep -q .'
    [ -e "$CRED" ] && note "after purge $CRED still exists: $(ls -A "$CRED" 2>/dev/null | tr '\n' ' ')"

    ck "reinstall" apt-get install -y "$DEB"
    ck "socket disabled after reinstall" is_enabled sysom-mcp.socket disabled
    configure
    ck "edit config.toml (sse_keep_alive_secs = 20)" bash -c \
        "grep -q '^#sse_keep_alive_secs' /etc/sysom-mcp/config.toml && sed -i 's/^#sse_keep_alive_secs = .*/sse_keep_alive_secs = 20/' /etc/sysom-mcp/config.toml && printf '# e2e local edit\n' >> /etc/sysom-mcp/config.toml"
    ck "enable --now socket" systemctl enable --now sysom-mcp.socket
    ck "serves with the edited config" tools_list_is_21 "$TOKEN"
    ck "upgrade to ${DEB_VERSION}+e2e1" apt-get install -y "$DEB_UPGRADE"
    ck "version is ${DEB_VERSION}+e2e1" test "$(dpkg-query -W -f='${Version}' sysom-mcp)" = "${DEB_VERSION}+e2e1"
    ck "config edit survived" grep -q '^sse_keep_alive_secs = 20' /etc/sysom-mcp/config.toml
    ck "config comment survived" grep -q '^# e2e local edit' /etc/sysom-mcp/config.toml
    ck "no .dpkg-dist/.dpkg-new left" bash -c '! ls /etc/sysom-mcp/*.dpkg-* 2>/dev/null | grep -q .'
    ck "socket still enabled after upgrade" is_enabled sysom-mcp.socket enabled
    ck "socket active after upgrade" is_state sysom-mcp.socket active
    ck "serves after upgrade" tools_list_is_21 "$TOKEN"
    finish
}

# ---------------------------------------------------------------------------------------
step11() {
    begin "11 rpm -ivh --nodeps: scriptlets, serves, rpm -e cleans up"
    if [ -z "${RPM:-}" ]; then
        ck "an .rpm was staged" false
        finish; return
    fi
    dpkg-query -W sysom-mcp >/dev/null 2>&1 && apt-get purge -y sysom-mcp >/dev/null 2>&1
    ck "deb purged, port free" bash -c '! ss -Htln "sport = :7140" | grep -q .'
    local fw=0
    if firewall-cmd --state >/dev/null 2>&1; then
        fw=1
        firewall-cmd -q --reload
        ck "firewalld does not know sysom-mcp before the rpm" bash -c '! firewall-cmd --get-services | tr " " "\n" | grep -qx sysom-mcp'
    else
        note "firewalld not running; the reload in %post is not checked"
    fi
    # RPM distributions (Fedora, RHEL, Anolis, Alinux) ship a catch-all "disable *" preset that
    # %systemd_post relies on; Debian has none (unlisted units preset to "enabled").
    say "  (emulating an RPM distribution's presets: /etc/systemd/system-preset/99-default-disable.preset = 'disable *')"
    mkdir -p /etc/systemd/system-preset
    echo 'disable *' > /etc/systemd/system-preset/99-default-disable.preset
    ck "rpm -ivh --nodeps" rpm -ivh --nodeps "$RPM"
    rpm -q sysom-mcp 2>&1 | sed 's/^/  | /'
    ck "unit files installed" systemctl cat sysom-mcp.socket sysom-mcp.service
    ck "socket left disabled" is_enabled sysom-mcp.socket disabled
    ck "socket inactive" is_state sysom-mcp.socket inactive
    [ $fw = 1 ] && ck "%post reloaded firewalld (service sysom-mcp known)" \
        bash -c 'firewall-cmd --get-services | tr " " "\n" | grep -qx sysom-mcp'
    configure
    ck "enable --now socket" systemctl enable --now sysom-mcp.socket
    ck "serves 21 tools" tools_list_is_21 "$TOKEN"
    ckv "memgraph via the rpm-installed server" client http --url "$URL" --token "$TOKEN" \
        --call memgraph --args "$MEMGRAPH_ARGS"
    ck "rpm -e" rpm -e sysom-mcp
    ck "socket stopped after rpm -e" bash -c '! systemctl is-active -q sysom-mcp.socket'
    ck "service stopped after rpm -e" bash -c '! systemctl is-active -q sysom-mcp.service'
    ck "port closed after rpm -e" bash -c '! ss -Htln "sport = :7140" | grep -q .'
    ck "no enablement symlink left" bash -c '! ls /etc/systemd/system/*/sysom-mcp.* 2>/dev/null | grep -q .'
    ck "binary removed" test ! -e /usr/bin/sysom-mcp
    rm -f /etc/systemd/system-preset/99-default-disable.preset
    finish
}

# ---------------------------------------------------------------------------------------
step12() {
    begin "12 nginx: two stateless instances behind the shipped example; TLS example carries SSE"
    . "$G/nginx_step.sh"
    nginx_step
    finish
}

# ---------------------------------------------------------------------------------------
# local_call TOOL ARGS_JSON FILE: call a local tool with the streamable HTTP client, answer to FILE
local_call() {
    local o
    rm -f "$3"
    o=$(client http --url "$URL" --token "$TOKEN" --call "$1" --args "$2" --save "$3" --timeout 60 2>&1) ||
        { printf '%s\n' "$o" | tail -n 5 | sed "s/^/  ! $1: /"; return 1; }
}
# local_ck DESCRIPTION KIND FILE ARGS...: local_check.py on a saved answer (prints it on failure)
local_ck() {
    local d=$1
    shift
    ckv "$d" python3 "$G/local_check.py" "$@"
}
step13() {
    begin "13 induced conditions seen by the local tools (local-diagnosis drop-in, python MCP client over HTTP)"
    local dropin=/etc/systemd/system/sysom-mcp.service.d/local-diagnosis.conf ans=/tmp/e2e-local
    local t0 unit pid rc memcg_note= expect_cg
    mkdir -p "$ans"
    # a known state whatever ran before: the package installed and configured, the socket on
    # :7140, no allowed_hosts left by step 12
    if ! dpkg-query -W sysom-mcp >/dev/null 2>&1; then
        ck "install the .deb again" apt-get install -y "$DEB"
    fi
    sed -i 's|^allowed_hosts = |#allowed_hosts = |' /etc/sysom-mcp/config.toml
    rm -f /etc/systemd/system/sysom-mcp.socket.d/loopback.conf
    configure
    systemctl daemon-reload
    systemctl stop sysom-mcp.service 2>/dev/null
    systemctl restart sysom-mcp.socket 2>/dev/null
    ck "sysom-mcp.socket enabled and listening" bash -c 'systemctl enable --now sysom-mcp.socket && ss -Htln "sport = :7140" | grep -q .'
    ck "install the local-diagnosis drop-in" install -D -m 0644 \
        /usr/share/doc/sysom-mcp/examples/local-diagnosis.conf "$dropin"
    systemctl daemon-reload
    # Started here, outside the timed part: the first start waits for network-online.target,
    # which in a freshly booted guest can take tens of seconds.
    ck "restart sysom-mcp.service with the drop-in" systemctl restart sysom-mcp.service
    t0=$(date +%s)

    # (d) a filled tmpfs
    mkdir -p /mnt/e2e-full
    mount -t tmpfs -o size=4m e2e-full /mnt/e2e-full
    dd if=/dev/zero of=/mnt/e2e-full/fill bs=64k 2>/dev/null   # stops at ENOSPC
    local_call local_disk '{}' "$ans/disk.json"
    local_ck "(d) local_disk reports the filled tmpfs /mnt/e2e-full full" full "$ans/disk.json" /mnt/e2e-full
    ck "service runs with the drop-in (ProtectProc=default)" test "$(show sysom-mcp.service ProtectProc)" = default
    umount /mnt/e2e-full

    # (a) a process killed by the OOM killer under a memory limit
    unit=e2e-oomhog-$(rand 3)
    systemd-run --quiet --collect --unit="$unit" -p MemoryMax=32M -p MemorySwapMax=0 --wait \
        /opt/e2e-venv/bin/python "$G/oomhog.py" >/dev/null 2>&1
    rc=$?
    expect_cg=$unit.service
    if [ $rc = 3 ]; then
        # oomhog.py found no limit: MemoryMax= is not enforced in this guest (cgroup v1 host,
        # whose memory hierarchy nspawn mounts read-only); use the host-made cgroup (run.sh)
        if [ -n "${E2E_MEMCG:-}" ] && [ -d /run/e2e-memcg ]; then
            note "MemoryMax= not enforced in this guest (cgroup v1 host, read-only memory hierarchy); the hog runs in the 32 MiB memory cgroup $E2E_MEMCG that run.sh prepared"
            # (not through systemd-run: its ExecStart= would expand the shell's $$)
            sh -c 'echo $$ > /run/e2e-memcg/cgroup.procs && exec /opt/e2e-venv/bin/python "$1" /run/e2e-memcg' \
                oomhog "$G/oomhog.py" >/dev/null 2>&1
            rc=$?
            expect_cg=$E2E_MEMCG
        else
            ck "MemoryMax= enforced, or a memory cgroup from run.sh" false
        fi
    fi
    ck "(a) the memory hog was killed (rc $rc: 137 or 255 = SIGKILL)" test "$rc" = 137 -o "$rc" = 255
    local_call local_oomcheck "{\"time\":\"$((t0 - 120))\"}" "$ans/oom.json"
    local_ck "(a) local_oomcheck names e2e-oomhog and its cgroup .../$expect_cg" oom "$ans/oom.json" e2e-oomhog "$expect_cg"

    # (b) a direct-IO writer is the top writer. dd must still be running when the 3 s window
    # closes: a child that exits is reaped by this shell, and the kernel then adds its IO to the
    # shell's /proc/PID/io (CI's disk wrote 4 GiB in 3 s, so a fixed count finished early and the
    # top writer was test.sh). So the count is large and the run is bounded by time instead.
    timeout 20 dd if=/dev/zero of=/e2e/out/e2e-direct bs=256k count=262144 oflag=direct status=none 2>/dev/null &
    pid=$!
    sleep 0.5
    local_call local_iofsstat '{"duration":3}' "$ans/io.json"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    rm -f /e2e/out/e2e-direct
    local_ck "(b) local_iofsstat names dd (oflag=direct) the top writer" writer "$ans/io.json" dd

    # (c) packets dropped by an nftables rule in a network namespace
    ip netns add e2e-drop && ip -n e2e-drop link set lo up
    ck "nft drop rule in netns e2e-drop" ip netns exec e2e-drop nft -f - <<'NFT'
table inet e2e {
    chain input {
        type filter hook input priority 0; policy accept;
        udp dport 9 counter drop
    }
}
NFT
    ip netns exec e2e-drop /usr/bin/python3 "$G/udp_flood.py" 9 12 200 &
    pid=$!
    sleep 0.5
    local_call local_packetdrop "{\"duration\":3,\"pid\":$pid}" "$ans/drop.json"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    say "  nft: $(ip netns exec e2e-drop nft list ruleset 2>&1 | grep -o 'counter packets [0-9]*')"
    local_ck "(c) local_packetdrop (pid in netns e2e-drop) sees Ip.InUndelivered rise" drops "$ans/drop.json" Ip.InUndelivered
    ip netns del e2e-drop

    # (e) a busy loop
    cp /usr/bin/dash /usr/local/bin/e2e-busyloop
    /usr/local/bin/e2e-busyloop -c 'while :; do :; done' &
    pid=$!
    sleep 2
    local_call local_loadtask '{}' "$ans/load.json"
    kill "$pid"; wait "$pid" 2>/dev/null
    local_ck "(e) local_loadtask names the busy loop e2e-busyloop" busy "$ans/load.json" e2e-busyloop

    local secs=$(( $(date +%s) - t0 ))
    ck "the induced conditions and their checks took at most 60 s (${secs} s)" test "$secs" -le 60
    rm -f "$dropin" /usr/local/bin/e2e-busyloop; rm -rf "$ans"
    systemctl daemon-reload
    systemctl stop sysom-mcp.service 2>/dev/null
    finish
}

# ---------------------------------------------------------------------------------------
# worst_bodies: the issue-17 bodies built to amplify in memory (4 MiB: two million zeros in one
# array; 1.3 million empty objects), eight of each at once with the bearer token; prints the
# HTTP statuses it got, fails unless every one is 400 or 413
worst_bodies() {
    python3 - "$URL" "$TOKEN" <<'EOF'
import http.client, sys, threading, urllib.parse
url, token = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2]
head = '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":['
bodies = [(head + "0," * 2_000_000 + '0]}}').encode(), (head + "{}," * 1_300_000 + '{}]}}').encode()]
statuses = []
def post(body):
    try:
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        c.request("POST", url.path, body=body, headers={"Content-Type": "application/json",
                  "Accept": "application/json, text/event-stream", "Authorization": "Bearer " + token})
        r = c.getresponse(); r.read(); statuses.append(r.status)
    except OSError as e:
        statuses.append(type(e).__name__)
threads = [threading.Thread(target=post, args=(b,)) for b in bodies for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(map(str, sorted(statuses, key=str))))
sys.exit(0 if len(statuses) == 16 and all(s in (400, 413) for s in statuses) else 1)
EOF
}
step14() {
    begin "14 worst-case JSON bodies against the packaged service under its MemoryMax=: it survives and serves"
    local pid0 pid1 max cg peak
    if ! dpkg-query -W sysom-mcp >/dev/null 2>&1; then
        ck "install the .deb again" apt-get install -y "$DEB"
    fi
    configure
    systemctl daemon-reload
    ck "sysom-mcp.socket enabled and listening" bash -c 'systemctl enable --now sysom-mcp.socket && ss -Htln "sport = :7140" | grep -q .'
    ck "sysom-mcp.service started" systemctl restart sysom-mcp.service
    ck "the service serves before" tools_list_is_21 "$TOKEN"
    max=$(show sysom-mcp.service MemoryMax)
    ck "the unit's MemoryMax= is 256M ($max)" test "$max" = 268435456
    cg=/sys/fs/cgroup$(show sysom-mcp.service ControlGroup)
    if [ -r "$cg/memory.max" ]; then
        ck "the service's cgroup enforces it ($cg/memory.max)" test "$(cat "$cg/memory.max")" = 268435456
    else
        note "no $cg/memory.max (cgroup v1 host): MemoryMax= is not enforced in this guest; the service's own peak RSS is checked instead"
    fi
    pid0=$(main_pid)
    ckv "16 worst-case bodies at once (8 x 2M zeros, 8 x 1.3M empty objects), all refused 400/413" worst_bodies
    pid1=$(main_pid)
    ck "the service is still active" is_state sysom-mcp.service active
    ck "and was neither killed nor restarted (MainPID $pid0 -> $pid1, NRestarts $(show sysom-mcp.service NRestarts))" \
        test "$pid0" = "$pid1" -a "$(show sysom-mcp.service NRestarts)" = 0
    # The kernel names the victim: "Killed process N (sysom-mcp)" / "oom-kill:...task=sysom-mcp".
    ck "no OOM kill of sysom-mcp in the kernel log" bash -c \
        "! journalctl -b -k --no-pager | grep -iE 'killed process|oom-kill' | grep -q sysom-mcp"
    if [ -r "$cg/memory.peak" ]; then
        peak=$(cat "$cg/memory.peak")
        ck "its cgroup's peak stayed under MemoryMax= ($(( peak >> 20 )) MiB)" test "$peak" -lt 268435456
    else
        peak=$(sed -n 's/^VmHWM: *\([0-9]*\) kB/\1/p' "/proc/$pid1/status")
        ck "its peak RSS stayed under 256 MiB ($(( ${peak:-0} >> 10 )) MiB)" test "${peak:-0}" -lt 262144
    fi
    ck "the service still serves: curl tools/list returns 21 tools" tools_list_is_21 "$TOKEN"
    systemctl stop sysom-mcp.service 2>/dev/null
    finish
}

for n in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do
    if want_steps "$n"; then "step$n"; fi
done

say "" "=== done in $(( $(date +%s) - T0 ))s"
grep -q '^FAIL' "$RES" && exit 1
exit 0
