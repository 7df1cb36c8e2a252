#!/usr/bin/env bash
# Fuzzing (cargo-fuzz, libFuzzer) of every parser that reads bytes from outside banger:
# RPC frames, config.toml, OCI index/manifest/config JSON, layer tar streams, catalog
# bundles, the agent protocol (requests, responses, exec frames both ways, the serial mux),
# the /proc parsers and the ssh fallback's output.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600 s, every target)
# Seed corpora are in fuzz/corpus/<target>/ (what the runs find is added there, not
# committed); crashes land in fuzz/artifacts/<target>/ and make the script fail. Prints per
# target: runs, coverage (cov), corpus size, crashes. Not part of CI's time budget.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# The machine's one toolchain is stable: let cargo-fuzz use its nightly-only flags.
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
failed=0
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  mkdir -p "fuzz/corpus/$t"
  log=$work/log
  if cargo fuzz run --sanitizer none "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
    status=clean
  else
    status="CRASH (see fuzz/artifacts/$t)"; failed=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  echo "$t: $status after ${secs}s: $runs runs, cov $cov, corpus $corp"
  rm -rf "$work"
done
exit $failed
