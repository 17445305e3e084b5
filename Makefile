# sysom-mcp developer Makefile.
#
#   make release        cargo build --release --locked
#   make deb            Debian package  -> dist/sysom-mcp_<version>-1_<arch>.deb
#   make rpm            RPM package     -> dist/sysom-mcp-<version>-1.<arch>.rpm
#   make package-check  packaging/check.sh: build both, lintian, rpmlint,
#                       file lists, scriptlets, systemd-analyze, firewall files
#
# Packaging needs: debhelper dpkg-dev rpm (package-check installs them); on Debian/Ubuntu
#   sudo apt-get install --no-install-recommends debhelper dpkg-dev rpm
# The binary is taken from cargo's target directory, $CARGO_TARGET_DIR when set.

CARGO ?= cargo
DIST ?= dist
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release/sysom-mcp

DEB_VERSION = $(shell dpkg-parsechangelog -S Version)
DEB_ARCH = $(shell dpkg --print-architecture)
# Debian's rpm has an empty package database: BuildRequires cannot be met
# there, so skip the check unless rpm itself is an installed RPM.
RPMBUILD_FLAGS ?= $(shell rpm -q rpm >/dev/null 2>&1 || echo --nodeps)

.PHONY: release deb rpm package-check

release:
	$(CARGO) build --release --locked

# debian/rules runs `cargo build --release --locked` itself.
# dpkg-buildpackage writes its results to the parent directory; move ours.
deb:
	@command -v dh >/dev/null && command -v dpkg-buildpackage >/dev/null || { \
	    echo "make deb needs debhelper and dpkg-dev:" >&2; \
	    echo "  sudo apt-get install --no-install-recommends debhelper dpkg-dev" >&2; exit 2; }
	dpkg-buildpackage -us -uc -b -d
	mkdir -p $(DIST)
	mv ../sysom-mcp_$(DEB_VERSION)_$(DEB_ARCH).deb \
	   ../sysom-mcp_$(DEB_VERSION)_$(DEB_ARCH).changes \
	   ../sysom-mcp_$(DEB_VERSION)_$(DEB_ARCH).buildinfo $(DIST)/
	@echo "built $(DIST)/sysom-mcp_$(DEB_VERSION)_$(DEB_ARCH).deb"

# The spec packages target/release/sysom-mcp (see rpm/sysom-mcp.spec). A binary newer than the
# sources (e.g. from `make deb`, whose hardening CFLAGS would otherwise force a second full
# build) is reused.
$(BIN): Cargo.toml Cargo.lock $(shell find src -name '*.rs')
	$(CARGO) build --release --locked

rpm: $(BIN)
	@command -v rpmbuild >/dev/null || { \
	    echo "make rpm needs rpmbuild:  sudo apt-get install --no-install-recommends rpm" >&2; \
	    echo "  (or on the RHEL family: sudo dnf install rpm-build)" >&2; exit 2; }
	rm -rf $(DIST)/rpmbuild
	rpmbuild -bb $(RPMBUILD_FLAGS) \
	    --define "sysom_bin $(abspath $(BIN))" \
	    --define "_sourcedir $(CURDIR)" \
	    --define "_topdir $(CURDIR)/$(DIST)/rpmbuild" \
	    rpm/sysom-mcp.spec
	cp $(DIST)/rpmbuild/RPMS/*/sysom-mcp-*.rpm $(DIST)/
	rm -rf $(DIST)/rpmbuild
	@ls $(DIST)/sysom-mcp-*.rpm

package-check:
	packaging/check.sh

# ---------------------------------------------------------------------------
# Development targets (test, lint, fmt, ...) go below this line.
# ---------------------------------------------------------------------------

.PHONY: test lint unit integration e2e bench fuzz

# The whole suite, as CI runs it (.ci/run calls this). The package checks and the e2e test
# need root (apt-get, systemd-nspawn).
test: lint unit integration package-check e2e fuzz

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --locked

# cargo-fuzz targets (fuzz/), each for FUZZ_SECONDS (default 20) on its saved corpus; skipped
# with a note where no nightly toolchain exists (the corpora are replayed by `make unit`).
fuzz:
	fuzz/run.sh

# Real MCP clients (Python mcp 1.x and 2.x) against the binary and the mock SysOM.
integration:
	$(CARGO) build --locked
	tests/run.sh

# Boots a Debian guest with systemd-nspawn, installs the packages, runs the guide's clients.
e2e:
	tests/e2e/run.sh

bench:
	bench/run.sh
