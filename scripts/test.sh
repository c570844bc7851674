#!/usr/bin/env bash
# The project's test command: installs what the tests need, builds the workspace, then runs
# every test with cargo-nextest. Extra arguments go to `cargo nextest run`, e.g.
#   scripts/test.sh -E 'test(/interop/)'
#
# What it prepares and exports for the tests:
#   RECEPTOR_BIN            our `receptor`, from this build
#   RECEPTOR_REFERENCE_BIN  the reference Go receptor 1.6.9 (scripts/reference-receptor)
#   RECEPTORCTL, PYTHON     receptorctl 1.6.9 and the python of .venv (scripts/setup-venv)
#   RECEPTORCTL_TESTS_DIR   receptorctl 1.6.9's own test suite (from its sdist)
# Honours CARGO_TARGET_DIR. Exits non-zero if any step or any test fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { echo "test.sh: $*" >&2; }
die() { echo "test.sh: $*" >&2; exit 1; }

apt_install() {
  [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null || return 1
  log "installing $* with apt-get"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# --- prerequisites -------------------------------------------------------------------------
# rustup's default location, for shells whose PATH lacks it.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain with rustup)"
# A C compiler: the tests build a C plugin, and some crates compile C.
command -v cc >/dev/null || apt_install gcc libc6-dev || die "no C compiler (cc) found"
command -v flock >/dev/null || apt_install util-linux || die "flock not found"
# receptorctl's own test suite (tests/receptorctl_suite) is adapted with patch(1); the suite
# makes its certificates with openssl and its work-signing key with ssh-keygen.
command -v patch >/dev/null || apt_install patch || die "patch not found"
command -v openssl >/dev/null || apt_install openssl || die "openssl not found"
command -v ssh-keygen >/dev/null || apt_install openssh-client || die "ssh-keygen not found"
# The ip-router tests make network namespaces (`ip`) and ping through them; they fail,
# saying so, where these are missing.
command -v ip >/dev/null || apt_install iproute2 || log "warning: no ip (iproute2): the ip-router tests will fail"
command -v ping >/dev/null || apt_install iputils-ping || log "warning: no ping: the ip-router tests will fail"
# The mesh page is checked in a real headless browser (Debian's chromium: a 2-3 min install).
command -v chromium >/dev/null || apt_install chromium || log "warning: no chromium: the mesh_page test will fail"
# The package test builds a .deb, checks its unit with systemd-analyze (which also wants the
# unit's /bin/kill) and reads the man page; none of it needs systemd running as PID 1.
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (a Debian-based system is required)"
command -v systemd-analyze >/dev/null || apt_install systemd || die "systemd-analyze not found"
[[ -x /bin/kill ]] || apt_install procps || die "/bin/kill not found"
command -v man >/dev/null || apt_install man-db || die "man not found"
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo-nextest missing: installing it from crates.io"
  cargo install --locked cargo-nextest >&2 || die "could not install cargo-nextest"
fi

eval "$(scripts/setup-venv)"
RECEPTOR_REFERENCE_BIN="$(scripts/reference-receptor)"
export RECEPTOR_REFERENCE_BIN

# --- build ---------------------------------------------------------------------------------
# Plugins are cdylibs and the daemon is a binary: build every package, not only test targets.
log "building the workspace"
cargo build --workspace --all-targets
target_dir="$(cargo metadata --format-version 1 --no-deps \
  | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
RECEPTOR_BIN="$target_dir/debug/receptor"
[[ -x "$RECEPTOR_BIN" ]] || die "build produced no $RECEPTOR_BIN"
export RECEPTOR_BIN
# The plugin libraries tests load; set so that no test process rebuilds them.
RECEPTOR_PLUGIN_DIR="$target_dir/debug"
export RECEPTOR_PLUGIN_DIR

log "RECEPTOR_BIN=$RECEPTOR_BIN"
log "RECEPTOR_REFERENCE_BIN=$RECEPTOR_REFERENCE_BIN ($("$RECEPTOR_REFERENCE_BIN" --version))"
log "RECEPTORCTL=$RECEPTORCTL"
log "RECEPTORCTL_TESTS_DIR=$RECEPTORCTL_TESTS_DIR"

# anyhow errors returned by tests print their chain; a backtrace of the test harness adds
# nothing but noise (RUST_BACKTRACE still applies to panics).
export RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}"

# --- run -----------------------------------------------------------------------------------
# Profile settings (timeouts, no retries, no fail-fast) are in .config/nextest.toml.
cargo nextest run --workspace "$@"
