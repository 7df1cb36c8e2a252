#!/usr/bin/env bash
# banger's main job, on a fresh machine: build banger, start its daemon and boot a sandbox
# that runs a command. Everything happens inside a throwaway network namespace and a
# throwaway BANGER_HOME, so the host's own network is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_apt build-essential pkg-config git
cargo build --release --bins --locked >&2
home=$(mktemp -d /tmp/banger-demo.XXXXXX)
trap 'BANGER_HOME=$home BANGER_NO_AUTOSTART=1 ./target/release/banger daemon stop >/dev/null 2>&1 || true; rm -rf "$home"' EXIT
export BANGER_HOME=$home
./target/release/banger ping
echo "banger: booting sandboxes is not there yet (issue: boot a real sandbox end to end)" >&2
