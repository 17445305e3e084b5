#!/bin/bash
# packaging/check.sh -- static checks of the sysom-mcp packages, units and
# packaging files. Used by CI (`make package-check`) and by hand.
#
# Usage: packaging/check.sh [--use-dist] [--no-apt] [--skip-nginx]
#   --use-dist    check dist/sysom-mcp_<ver>-1_*.deb and dist/sysom-mcp-<ver>-*.rpm
#                 instead of building them (`make deb rpm`) first
#   --no-apt      do not apt-get install the tools (they must be present)
#   --skip-nginx  do not fetch nginx (apt-get download) to syntax-check the
#                 nginx examples
# Environment: SYSOM_DEB / SYSOM_RPM name package files to check directly.
#
# Prints one PASS/FAIL/SKIP line per check; exits 1 if any check FAILs.
# Needs root for apt-get (or --no-apt). Touches nothing outside dist/ and a
# temporary directory; no network except apt.

set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

USE_DIST=0 APT=1 NGINX=1
for a in "$@"; do
	case $a in
	--use-dist) USE_DIST=1 ;;
	--no-apt) APT=0 ;;
	--skip-nginx) NGINX=0 ;;
	-h | --help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "unknown argument: $a" >&2; exit 2 ;;
	esac
done

FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
skip() { echo "SKIP: $*"; }
# check NAME CMD...: PASS if CMD succeeds, else FAIL with its output.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then pass "$name"; else fail "$name"; [ -n "$out" ] && sed 's/^/    /' <<<"$out"; fi
}

TMP=$(mktemp -d /tmp/sysom-mcp-check.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# System python: python3-firewall lives in its dist-packages.
PY=/usr/bin/python3

# ---------------------------------------------------------------- tools
TOOLS="debhelper dpkg-dev lintian rpm rpmlint systemd libxml2-utils binutils man-db groff-base python3 python3-firewall"
if [ $APT = 1 ]; then
	apt_install() {
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $TOOLS >"$TMP/apt.log" 2>&1
	}
	# apt occasionally fails on these machines (cache removed mid-install):
	# update and retry once.
	if apt_install || { apt-get update -q >>"$TMP/apt.log" 2>&1; apt_install; }; then
		pass "tools installed ($TOOLS)"
	else
		fail "apt-get install $TOOLS"; tail -5 "$TMP/apt.log" | sed 's/^/    /'
	fi
fi

# ---------------------------------------------------------------- versions
CARGO_VER=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
DEB_VER=$(dpkg-parsechangelog -S Version 2>/dev/null)
SPEC_VER=$(sed -n 's/^Version: *//p' rpm/sysom-mcp.spec)
SPEC_REL=$(sed -n 's/^Release: *\([0-9]*\).*/\1/p' rpm/sysom-mcp.spec)
if [ "${DEB_VER%-*}" = "$CARGO_VER" ] && [ "$SPEC_VER" = "$CARGO_VER" ]; then
	pass "versions agree: Cargo.toml $CARGO_VER, debian/changelog $DEB_VER, spec $SPEC_VER-$SPEC_REL"
else
	fail "versions differ: Cargo.toml '$CARGO_VER', debian/changelog '$DEB_VER', spec '$SPEC_VER'"
fi

# ---------------------------------------------------------------- packages
if [ -z "${SYSOM_DEB:-}${SYSOM_RPM:-}" ] && [ $USE_DIST = 0 ]; then
	if make --no-print-directory deb rpm >"$TMP/build.log" 2>&1; then
		pass "make deb rpm"
	else
		fail "make deb rpm (last lines of the log:)"; tail -20 "$TMP/build.log" | sed 's/^/    /'
	fi
fi
DEB=${SYSOM_DEB:-$(ls -t dist/sysom-mcp_"$DEB_VER"_*.deb 2>/dev/null | head -1)}
RPM=${SYSOM_RPM:-$(ls -t dist/sysom-mcp-"$SPEC_VER"-"$SPEC_REL"*.rpm 2>/dev/null | grep -v '\.src\.rpm$' | head -1)}
[ -f "$DEB" ] && pass "deb: $DEB" || { fail "no .deb found (dist/sysom-mcp_${DEB_VER}_*.deb)"; DEB=; }
[ -f "$RPM" ] && pass "rpm: $RPM" || { fail "no .rpm found (dist/sysom-mcp-${SPEC_VER}-${SPEC_REL}*.rpm)"; RPM=; }

# ---------------------------------------------------------------- lintian / rpmlint
if [ -n "$DEB" ]; then
	# Errors and warnings fail; intended ones are overridden, with a reason,
	# in debian/sysom-mcp.lintian-overrides.
	check "lintian (no errors/warnings beyond debian/sysom-mcp.lintian-overrides)" \
		lintian --fail-on error,warning "$DEB"
fi
if [ -n "$RPM" ]; then
	# The package and the spec in one run: filters unused by both would be
	# reported as errors.
	if out=$(rpmlint -r rpm/sysom-mcp.rpmlintrc "$RPM" rpm/sysom-mcp.spec 2>&1) &&
		grep -q ' 0 errors, 0 warnings' <<<"$out"; then
		pass "rpmlint (rpm + spec, filters in rpm/sysom-mcp.rpmlintrc)"
	else
		fail "rpmlint"; sed 's/^/    /' <<<"$out"
	fi
fi

# ---------------------------------------------------------------- file lists
DEB_EXPECT="./usr/bin/sysom-mcp
./lib/systemd/system/sysom-mcp.socket|./usr/lib/systemd/system/sysom-mcp.socket
./lib/systemd/system/sysom-mcp.service|./usr/lib/systemd/system/sysom-mcp.service
./etc/default/sysom-mcp
./etc/sysom-mcp/config.toml
./etc/sysom-mcp/credentials/
./usr/lib/firewalld/services/sysom-mcp.xml
./etc/ufw/applications.d/sysom-mcp
./usr/share/man/man8/sysom-mcp.8.gz
./usr/share/doc/sysom-mcp/copyright
./usr/share/doc/sysom-mcp/examples/README
./usr/share/doc/sysom-mcp/examples/listen-address.conf
./usr/share/doc/sysom-mcp/examples/local-diagnosis.conf
./usr/share/doc/sysom-mcp/examples/nginx-tls.conf
./usr/share/doc/sysom-mcp/examples/nginx-two-instances.conf
./usr/share/doc/sysom-mcp/examples/nginx-fleet.conf
./usr/share/doc/sysom-mcp/examples/haproxy.cfg
./usr/share/doc/sysom-mcp/examples/qwen-settings-sse.json
./usr/share/doc/sysom-mcp/examples/qwen-settings-http.json
./usr/share/doc/sysom-mcp/examples/sysom-mcp@.socket
./usr/share/doc/sysom-mcp/examples/sysom-mcp@.service"
RPM_EXPECT="/usr/bin/sysom-mcp
/usr/lib/systemd/system/sysom-mcp.socket
/usr/lib/systemd/system/sysom-mcp.service
/etc/sysconfig/sysom-mcp
/etc/sysom-mcp/config.toml
/etc/sysom-mcp/credentials
/usr/lib/firewalld/services/sysom-mcp.xml
/etc/ufw/applications.d/sysom-mcp
/usr/share/man/man8/sysom-mcp.8.gz
/usr/share/licenses/sysom-mcp/LICENSE
/usr/share/doc/sysom-mcp/examples/README
/usr/share/doc/sysom-mcp/examples/listen-address.conf
/usr/share/doc/sysom-mcp/examples/local-diagnosis.conf
/usr/share/doc/sysom-mcp/examples/nginx-tls.conf
/usr/share/doc/sysom-mcp/examples/nginx-two-instances.conf
/usr/share/doc/sysom-mcp/examples/nginx-fleet.conf
/usr/share/doc/sysom-mcp/examples/haproxy.cfg
/usr/share/doc/sysom-mcp/examples/qwen-settings-sse.json
/usr/share/doc/sysom-mcp/examples/qwen-settings-http.json
/usr/share/doc/sysom-mcp/examples/sysom-mcp@.socket
/usr/share/doc/sysom-mcp/examples/sysom-mcp@.service"
# expect_files LISTFILE EXPECTED: every line of EXPECTED (alternatives
# separated by |) must be a line of LISTFILE.
expect_files() {
	local missing="" line alt ok
	while read -r line; do
		ok=0
		IFS='|' read -ra alts <<<"$line"
		for alt in "${alts[@]}"; do grep -qxF -- "$alt" "$1" && ok=1; done
		[ $ok = 1 ] || missing="$missing $line"
	done <<<"$2"
	[ -z "$missing" ] || { echo "missing:$missing"; return 1; }
}
if [ -n "$DEB" ]; then
	dpkg-deb -c "$DEB" | awk '{print $6}' >"$TMP/deb.list"
	check "deb file list" expect_files "$TMP/deb.list" "$DEB_EXPECT"
	dpkg-deb -c "$DEB" | awk '$6 == "./etc/sysom-mcp/credentials/" {print $1, $2}' >"$TMP/perm"
	check "deb: credentials dir is drwx------ root/root" grep -qx 'drwx------ root/root' "$TMP/perm"
	dpkg-deb -I "$DEB" conffiles >"$TMP/deb.conffiles" 2>/dev/null
	check "deb conffiles" expect_files "$TMP/deb.conffiles" "/etc/default/sysom-mcp
/etc/sysom-mcp/config.toml
/etc/ufw/applications.d/sysom-mcp"
fi
if [ -n "$RPM" ]; then
	rpm -qpl "$RPM" 2>/dev/null >"$TMP/rpm.list"
	check "rpm file list" expect_files "$TMP/rpm.list" "$RPM_EXPECT"
	rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]' "$RPM" 2>/dev/null >"$TMP/rpm.perms"
	check "rpm: credentials dir is drwx------ root" grep -qx 'drwx------ root /etc/sysom-mcp/credentials' "$TMP/rpm.perms"
	rpm -qpc "$RPM" 2>/dev/null >"$TMP/rpm.conf"
	rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null >"$TMP/rpm.flags"
	check "rpm %config(noreplace): sysconfig, config.toml, ufw profile" expect_files "$TMP/rpm.flags" "cn /etc/sysconfig/sysom-mcp
cn /etc/sysom-mcp/config.toml
cn /etc/ufw/applications.d/sysom-mcp"
fi

# ---------------------------------------------------------------- maintainer scripts
if [ -n "$DEB" ]; then
	mkdir -p "$TMP/debctl"
	dpkg-deb -e "$DEB" "$TMP/debctl"
	for s in preinst postinst prerm postrm; do
		[ -f "$TMP/debctl/$s" ] || continue
		check "deb $s: sh -n" sh -n "$TMP/debctl/$s"
	done
	# Installed but neither enabled nor started; stopped on removal;
	# try-restarted on upgrade.
	no_autostart() {
		# dh_installsystemd --no-enable guards its enable call with
		# "debian-installed" (re-enable only what the admin had enabled);
		# the default snippet enables on first install.
		grep -q "deb-systemd-helper debian-installed 'sysom-mcp.socket'" "$TMP/debctl/postinst" &&
			grep -q "deb-systemd-helper debian-installed 'sysom-mcp.service'" "$TMP/debctl/postinst" &&
			! grep -E 'deb-systemd-invoke (start|restart) ' "$TMP/debctl/postinst"
	}
	check "deb postinst neither enables nor starts the units" no_autostart
	check "deb postinst try-restarts on upgrade" grep -q "deb-systemd-invoke try-restart 'sysom-mcp.service' 'sysom-mcp.socket'" "$TMP/debctl/postinst"
	check "deb prerm stops socket and service on remove" grep -q 'deb-systemd-invoke stop sysom-mcp.socket sysom-mcp.service' "$TMP/debctl/prerm"
	check "deb postrm purges unit state and credentials" sh -c "grep -q 'deb-systemd-helper purge' '$TMP/debctl/postrm' && grep -q 'rm -rf /etc/sysom-mcp/credentials' '$TMP/debctl/postrm'"
fi
if [ -n "$RPM" ]; then
	for tag in PREIN POSTIN PREUN POSTUN PRETRANS POSTTRANS; do
		rpm -qp --qf "%{$tag}" "$RPM" 2>/dev/null >"$TMP/rpm.$tag"
		[ "$(cat "$TMP/rpm.$tag")" = "(none)" ] && continue
		check "rpm %${tag,,} scriptlet: sh -n" sh -n "$TMP/rpm.$tag"
	done
	check "rpm %post runs systemctl preset (stays disabled)" grep -q 'preset sysom-mcp.socket sysom-mcp.service' "$TMP/rpm.POSTIN"
	check "rpm %post reloads firewalld" grep -q 'firewall-cmd --reload' "$TMP/rpm.POSTIN"
fi

# ---------------------------------------------------------------- unpacked tree: binary, units
TREE=$TMP/root
mkdir -p "$TREE"
if [ -n "$DEB" ]; then
	dpkg-deb -x "$DEB" "$TREE"
	BIN=$TREE/usr/bin/sysom-mcp
	UNITDIR=$(ls -d "$TREE"/lib/systemd/system "$TREE"/usr/lib/systemd/system 2>/dev/null | head -1)
elif [ -n "$RPM" ]; then
	(cd "$TREE" && rpm2cpio "$ROOT/$RPM" | cpio -idm --quiet)
	BIN=$TREE/usr/bin/sysom-mcp
	UNITDIR=$TREE/usr/lib/systemd/system
else
	BIN= UNITDIR=
fi

if [ -n "$BIN" ] && [ -x "$BIN" ]; then
	# Runs on RHEL 9 / Ubuntu 22.04 / Debian 12: glibc symbol versions <= 2.34.
	maxglibc=$(objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
	if [ -n "$maxglibc" ] && [ "$(printf '%s\n2.34\n' "$maxglibc" | sort -V | tail -1)" = 2.34 ]; then
		pass "binary needs at most GLIBC_2.34 (highest: GLIBC_$maxglibc)"
	else
		fail "binary needs GLIBC_$maxglibc (> 2.34: no RHEL 9 / Ubuntu 22.04)"
	fi
	ver=$("$BIN" --version 2>&1)
	[ "$ver" = "sysom-mcp $CARGO_VER" ] && pass "--version prints '$ver'" || fail "--version printed '$ver', expected 'sysom-mcp $CARGO_VER'"
else
	fail "no binary in the package tree"
fi

if [ -n "$UNITDIR" ]; then
	# Verify the shipped units against the unpacked tree: ExecStart points at
	# the unpacked binary and man finds the unpacked man page. Any output
	# (systemd-analyze only warns about unknown keys / bad values) is a FAIL.
	U=$TMP/units
	mkdir -p "$U"
	cp "$UNITDIR"/sysom-mcp.socket "$UNITDIR"/sysom-mcp.service "$U"/
	cp "$TREE"/usr/share/doc/sysom-mcp/examples/sysom-mcp@.socket "$U"/sysom-mcp@.socket
	cp "$TREE"/usr/share/doc/sysom-mcp/examples/sysom-mcp@.service "$U"/sysom-mcp@.service
	sed -i "s#/usr/bin/sysom-mcp#$BIN#" "$U"/*.service
	ln -s sysom-mcp@.socket "$U"/sysom-mcp@7141.socket
	ln -s sysom-mcp@.service "$U"/sysom-mcp@7141.service
	verify() {
		local out
		out=$(cd "$U" && MANPATH="$TREE/usr/share/man" systemd-analyze verify "$@" 2>&1)
		local rc=$?
		[ $rc = 0 ] && [ -z "$out" ] || { echo "rc=$rc"; echo "$out"; return 1; }
	}
	check "systemd-analyze verify sysom-mcp.socket sysom-mcp.service (no output)" verify ./sysom-mcp.socket ./sysom-mcp.service
	check "systemd-analyze verify example sysom-mcp@7141.socket/.service (no output)" verify ./sysom-mcp@7141.socket ./sysom-mcp@7141.service

	# Exposure gate: <= 2.0 (--threshold counts in tenths).
	for svc in sysom-mcp.service sysom-mcp@7141.service; do
		out=$(cd "$U" && systemd-analyze security --offline=true --threshold=20 "./$svc" 2>&1)
		rc=$?
		score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
		if [ $rc = 0 ] && [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
			pass "systemd-analyze security $svc: exposure $score <= 2.0"
		else
			fail "systemd-analyze security $svc: exposure '${score:-?}' (rc $rc), limit 2.0"
			grep '✗' <<<"$out" | sed 's/^/    /'
		fi
	done
	# The opt-in local-diagnosis drop-in: a drop-in's lines apply after the unit's, so the
	# unit followed by the drop-in is the unit systemd runs; gate its exposure at <= 3.0.
	cat "$U"/sysom-mcp.service "$TREE"/usr/share/doc/sysom-mcp/examples/local-diagnosis.conf >"$U"/sysom-mcp-local.service
	out=$(cd "$U" && systemd-analyze security --offline=true --threshold=30 ./sysom-mcp-local.service 2>&1)
	rc=$?
	score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
	if [ $rc = 0 ] && [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then
		pass "systemd-analyze security with local-diagnosis.conf: exposure $score <= 3.0"
	else
		fail "systemd-analyze security with local-diagnosis.conf: exposure '${score:-?}' (rc $rc), limit 3.0"
	fi
	rm -f "$U"/sysom-mcp-local.service
	check "unit requests Type=notify, WatchdogSec, socket Accept=no, ListenStream=7140" sh -c "
		grep -qx 'Type=notify' '$U/sysom-mcp.service' && grep -qx 'WatchdogSec=30s' '$U/sysom-mcp.service' &&
		grep -qx 'Accept=no' '$U/sysom-mcp.socket' && grep -qx 'ListenStream=7140' '$U/sysom-mcp.socket'"
fi

# The example template must keep the main unit's hardening: compare the
# [Service] sections with the expected differences normalised away.
# The template's own lines: --stateless, and its instance name as the legacy SSE route id.
svc_body() {
	sed -n '/^\[Service\]/,/^\[Install\]/p' "$1" | grep -v '^#' | grep -vx 'Environment=SYSOM_MCP_ROUTE_ID=%i' |
		sed 's/ --stateless//'
}
check "examples/sysom-mcp@.service has the same [Service] section as sysom-mcp.service (+ --stateless, SYSOM_MCP_ROUTE_ID=%i)" \
	diff <(svc_body systemd/sysom-mcp.service) <(svc_body packaging/examples/sysom-mcp@.service)
check "packaging/examples/listen-address.conf == systemd/examples/listen-address.conf" \
	cmp packaging/examples/listen-address.conf systemd/examples/listen-address.conf

# ---------------------------------------------------------------- firewall files
FW=packaging/firewalld/sysom-mcp.xml
check "firewalld XML well-formed (xmllint)" xmllint --noout "$FW"
if $PY -c 'import firewall.core.io.service' 2>/dev/null; then
	# firewalld's own service reader validates elements, ports and protocols
	# (the code behind firewall-offline-cmd --check-config), without touching
	# the host's firewalld configuration.
	check "firewalld service_reader accepts $FW: port 7140/tcp" $PY -c "
import sys
from firewall.core.io.service import service_reader
s = service_reader('sysom-mcp.xml', 'packaging/firewalld')
assert s.ports == [('7140', 'tcp')], s.ports
assert s.short, 'no <short>'
"
else
	skip "firewalld service_reader (python3-firewall not installed)"
	check "firewalld XML: <service> with <port protocol=tcp port=7140>" $PY -c "
import xml.etree.ElementTree as E
r = E.parse('$FW').getroot()
assert r.tag == 'service' and r.find('short') is not None
assert [(p.get('port'), p.get('protocol')) for p in r.findall('port')] == [('7140', 'tcp')]
"
fi
check "ufw profile [sysom-mcp] with ports=7140/tcp" $PY -c "
import configparser
c = configparser.ConfigParser(interpolation=None)
c.read_file(open('packaging/ufw/sysom-mcp'))
assert c.sections() == ['sysom-mcp'], c.sections()
s = c['sysom-mcp']
assert s['ports'] == '7140/tcp' and s['title'] and s['description']
"

# ---------------------------------------------------------------- config, env file, man page vs interface
check "config.toml parses and sets nothing (all keys commented out)" $PY -c "
import tomllib
d = tomllib.load(open('packaging/config.toml', 'rb'))
assert all(v == {} for v in d.values()), d
"
# Every flag, env variable and config key of docs/interface.md appears in
# the man page / env file / config.toml.
check "man page, env file and config.toml cover docs/interface.md" $PY - <<'EOF'
import re, sys
iface = open('docs/interface.md').read()
man = open('docs/sysom-mcp.8').read().replace('\\-', '-').replace('\\fB', '').replace('\\fR', '').replace('\\fI', '')
env = open('packaging/sysom-mcp.default').read()
cfg = open('packaging/config.toml').read()
bad = []
for flag in sorted(set(re.findall(r'`(--[a-z][a-z-]*)', iface))):
    if flag not in man:
        bad.append('man page lacks flag ' + flag)
envs = set(re.findall(r'`((?:SYSOM|OPENAPI|ECS|RUST)_[A-Z_]*|ACCESS_KEY_(?:ID|SECRET)|SECURITY_TOKEN|ROLE_ARN|DASHSCOPE_API_KEY)', iface))
secret = {'OPENAPI_ACCESS_KEY_ID', 'ACCESS_KEY_ID', 'OPENAPI_ACCESS_KEY_SECRET', 'ACCESS_KEY_SECRET',
          'OPENAPI_SECURITY_TOKEN', 'SECURITY_TOKEN', 'OPENAPI_ROLE_ARN', 'ROLE_ARN', 'DASHSCOPE_API_KEY'}
for e in sorted(envs):
    if e not in man:
        bad.append('man page lacks ' + e)
    if e not in secret and e != 'SYSOM_MCP_CONFIG' and not re.search(r'^#' + e + '=', env, re.M):
        bad.append('env file lacks #%s=' % e)
    if e in secret and re.search(r'^#?' + e + '=', env, re.M):
        bad.append('env file offers secret variable ' + e)
sections = {}
cur = ''
for line in cfg.splitlines():
    m = re.match(r'^\[(\w+)\]$', line)
    if m:
        cur = m.group(1)
    m = re.match(r'^#(\w+) = ', line)
    if m:
        sections.setdefault(cur, set()).add(m.group(1))
for key in sorted(set(re.findall(r'`((?:[a-z]+\.)?[a-z_]+)` (?:\(top level\) )?\|', iface)) |
                  set(re.findall(r'config `([a-z]+\.[a-z_]+)`', iface))):
    if '.' not in key and key != 'endpoint':
        continue  # a value in backticks, not a key
    sec, _, k = key.rpartition('.')
    if k not in sections.get(sec, set()):
        bad.append('config.toml lacks %s' % key)
print('\n'.join(bad))
sys.exit(1 if bad else 0)
EOF
# Every option that `sysom-mcp --help` (or a subcommand's --help, recursively) offers is
# documented in the man page.
if [ -n "$BIN" ]; then
	check "man page documents every command-line option (sysom-mcp [SUBCOMMAND...] --help)" $PY - "$BIN" <<'EOF'
import re, subprocess, sys
exe = sys.argv[1]
man = open('docs/sysom-mcp.8').read().replace('\\-', '-')
man = re.sub(r'\\f[BRIPV]', '', man)

def walk(path, seen):
    out = subprocess.run([exe, *path, '--help'], capture_output=True, text=True).stdout
    for flag in re.findall(r'^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)', out, re.M):
        if flag not in ('--help', '--version'):
            seen.setdefault(flag, ' '.join(['sysom-mcp', *path]))
    if 'Commands:' in out:
        block = out.split('Commands:', 1)[1].split('\n\n', 1)[0]
        for sub in re.findall(r'^  ([a-z][a-z-]*)\s', block, re.M):
            if sub != 'help':
                walk([*path, sub], seen)
    return seen

flags = walk([], {})
bad = ['man page lacks %s (from `%s --help`)' % (f, where) for f, where in sorted(flags.items())
       if not re.search(re.escape(f) + r'(?![a-z0-9-])', man)]
print('\n'.join(bad) or '%d options documented' % len(flags))
sys.exit(1 if bad else 0)
EOF
fi
man_warnings() {
	local out
	out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l docs/sysom-mcp.8 2>&1 >/dev/null)
	[ -z "$out" ] || { echo "$out"; return 1; }
}
check "man page renders without warnings (man --warnings -l)" man_warnings
check "Qwen Code examples are valid JSON with httpUrl / url" $PY -c "
import json
h = json.load(open('packaging/examples/qwen-settings-http.json'))['mcpServers']['sysom']
s = json.load(open('packaging/examples/qwen-settings-sse.json'))['mcpServers']['sysom']
assert h['httpUrl'].endswith('/mcp/unified') and 'url' not in h
assert s['url'].endswith('/mcp/unified') and 'httpUrl' not in s
for x in (h, s):
    assert x['headers']['Authorization'].startswith('Bearer ') and x['timeout'] == 600000
"

# ---------------------------------------------------------------- nginx examples
if [ $NGINX = 1 ]; then
	NG=$TMP/nginx
	mkdir -p "$NG/pkg" "$NG/conf"
	if (cd "$NG" && apt-get download nginx >/dev/null 2>&1) && dpkg-deb -x "$NG"/nginx_*.deb "$NG/pkg" &&
		openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=mcp.example.com -days 1 \
			-keyout "$NG/key.pem" -out "$NG/cert.pem" >/dev/null 2>&1; then
		for f in nginx-tls.conf nginx-two-instances.conf nginx-fleet.conf; do
			sed -e "s#/etc/ssl/certs/mcp.example.com.pem#$NG/cert.pem#" \
				-e "s#/etc/ssl/private/mcp.example.com.key#$NG/key.pem#" \
				"packaging/examples/$f" >"$NG/conf/site.conf"
			cat >"$NG/conf/nginx.conf" <<-EOF
				pid $NG/nginx.pid;
				error_log stderr;
				events {}
				http {
				    access_log off;
				    client_body_temp_path $NG/b; proxy_temp_path $NG/p;
				    fastcgi_temp_path $NG/f; uwsgi_temp_path $NG/u; scgi_temp_path $NG/s;
				    include $NG/conf/site.conf;
				}
			EOF
			check "nginx -t examples/$f" "$NG/pkg/usr/sbin/nginx" -t -q -p "$NG" -c "$NG/conf/nginx.conf"
		done
	else
		skip "nginx -t (could not fetch nginx with apt-get download)"
	fi
fi

echo
if [ $FAILS = 0 ]; then
	echo "package-check: all checks passed"
else
	echo "package-check: $FAILS check(s) FAILED"
	exit 1
fi
