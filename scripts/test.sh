#!/usr/bin/env bash
# banger's test command: installs what the tests need (idempotently), then runs
# formatting, lints and every test tier. Run as root (tests make network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_apt build-essential pkg-config git python3 e2fsprogs iproute2 openssh-client

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check
echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (binaries used by the end-to-end tests)" >&2
cargo build --workspace --bins --locked

echo "==> tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi
