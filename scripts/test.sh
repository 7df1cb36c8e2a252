#!/usr/bin/env bash
# banger's test command: installs what the tests need (idempotently), then runs
# formatting, lints and every test tier. Run as root: the end-to-end tests boot real guests
# under QEMU inside network namespaces they create and delete.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh needs root: the end-to-end tests boot guests in network namespaces" >&2
  exit 1
fi

ensure_apt build-essential pkg-config git python3 cpio e2fsprogs iproute2 openssh-client \
  qemu-system-x86 qemu-utils busybox-static debootstrap procps nftables bind9-dnsutils docker-registry \
  util-linux systemd
# The official MCP Python SDK: the end-to-end test of `banger mcp` drives it as an agent would.
ensure_pip mcp.client 'mcp>=2,<3'
# The unprivileged owner in the end-to-end test of the root helper (a system user, no home).
id -u banger-e2e >/dev/null 2>&1 ||
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin banger-e2e

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check
echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (binaries used by the end-to-end tests)" >&2
cargo build --workspace --bins --locked
build_agent

# The default kernel and image, built once (host network namespace: it needs the Debian
# mirror) and reused by every end-to-end test.
export BANGER_E2E_HOME=${BANGER_E2E_HOME:-/var/tmp/banger-e2e-home}
echo "==> preparing the default kernel and image in $BANGER_E2E_HOME" >&2
BANGER_HOME=$BANGER_E2E_HOME "${CARGO_TARGET_DIR:-target}/debug/banger" image ensure >&2
BANGER_HOME=$BANGER_E2E_HOME "${CARGO_TARGET_DIR:-target}/debug/banger" daemon stop >&2

echo "==> tests" >&2
# A test whose root, tool or prepared home is missing fails here instead of skipping.
export BANGER_REQUIRE_PRIVILEGED=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi
