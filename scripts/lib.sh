# Shared helpers for banger's scripts. Sourced, not run.

# ensure_apt PKG...: installs the Debian packages that are missing (idempotent).
ensure_apt() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing packages: ${missing[*]}" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# ensure_cargo_tool CRATE [BIN]: cargo-installs CRATE (locked) unless BIN is already on PATH
# or in ~/.cargo/bin (idempotent).
ensure_cargo_tool() {
  local crate=$1 bin=${2:-$1}
  if command -v "$bin" >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/$bin" ]; then
    return 0
  fi
  echo "==> cargo install $crate" >&2
  cargo install --locked "$crate" >&2
}

# ensure_pip MODULE REQUIREMENT: pip-installs REQUIREMENT unless python3 imports MODULE.
ensure_pip() {
  local module=$1 req=$2
  python3 -c "import $module" 2>/dev/null && return 0
  echo "==> pip install $req" >&2
  python3 -m pip install -q --root-user-action=ignore "$req" >&2
}

# build_agent: builds the guest agent statically (a guest's libc may differ from the host's)
# into target/x86_64-unknown-linux-gnu/release/banger-agent, where bangerd looks for it.
build_agent() {
  echo "==> building the static guest agent" >&2
  RUSTFLAGS="-C target-feature=+crt-static" cargo build -p banger-agent --release --locked \
    --target x86_64-unknown-linux-gnu >&2
}

# bench_env: for the real-guest benchmarks. Builds the release binaries and the agent,
# makes sure BANGER_HOME's (default: the e2e home) kernel and image exist, then sets
# $bin, a throwaway BANGER_HOME ($home, exported) holding a copy of the store, and a
# throwaway network namespace $ns; everything is removed on exit (after bench_cleanup_hook,
# when defined).
bench_env() {
  [ "$(id -u)" -eq 0 ] || { echo "$0: run as root (netns, taps)" >&2; exit 1; }
  cargo build --release --bins --locked >&2
  build_agent
  bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release
  local src=${BANGER_HOME:-/var/tmp/banger-e2e-home}
  BANGER_HOME=$src "$bin/banger" image ensure >&2
  BANGER_HOME=$src "$bin/banger" daemon stop >&2
  home=$(mktemp -d /tmp/banger-bench.XXXXXX)
  mkdir -p "$home/state"
  cp "$src/state/state.db" "$home/state/"
  export BANGER_HOME=$home
  ns=banger-bench-$$
  ip netns add "$ns"
  trap bench_cleanup EXIT
  ip netns exec "$ns" ip link set lo up
}

bench_cleanup() {
  if declare -F bench_cleanup_hook >/dev/null; then bench_cleanup_hook || true; fi
  ip netns exec "$ns" "$bin/banger" daemon stop >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$home"
}
