#!/usr/bin/env bash
# Benchmark: running commands in a guest — `vm exec` (through the guest agent on vsock)
# against `vm ssh` (a real ssh session) in the same run, on one VM: round trip of `true`
# (N runs each, default 20, p50 and p90; and `sandbox_exec` through `banger mcp` when the
# MCP Python SDK is installed), 100 MB out of the guest and 100 MB into it
# through exec (sha256 compared, MB/s), and how long Ctrl-C takes to end `sleep 100`.
# Runs in a throwaway network namespace (scripts/lib.sh bench_env).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-20}
bench_env
b() { ip netns exec "$ns" "$bin/banger" "$@"; }
bench_cleanup_hook() { b vm delete ex >/dev/null 2>&1; }
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.5); if(i<1)i=1; print a[i]}'; }

b vm create --name ex >/dev/null
times() {
  local t0 t1
  for _ in $(seq "$runs"); do
    t0=$(now); "$@" >/dev/null; t1=$(now); ms "$t0" "$t1"
  done
}
agent=$(times b vm exec ex -- true)
ssh=$(times b vm ssh ex -- true)
echo "exec true, agent: p50 $(pct 50 <<<"$agent") ms, p90 $(pct 90 <<<"$agent") ms ($runs runs)"
echo "exec true, ssh:   p50 $(pct 50 <<<"$ssh") ms, p90 $(pct 90 <<<"$ssh") ms ($runs runs)"
# The same through `banger mcp` (one MCP session, the official Python SDK as the client).
if python3 -c 'import mcp.client' 2>/dev/null; then
  read -r p50 p90 < <(BANGER_MCP_CMD="[\"ip\",\"netns\",\"exec\",\"$ns\",\"$bin/banger\",\"mcp\"]" \
    BANGER_MCP_VM=ex RUNS=$runs python3 crates/banger-cli/tests/mcp_client.py bench)
  echo "exec true, MCP sandbox_exec: p50 $p50 ms, p90 $p90 ms ($runs runs)"
fi

b vm exec ex -- sh -c 'head -c 100000000 /dev/urandom > /root/big' 
guest_sum=$(b vm exec ex -- sha256sum /root/big | cut -d' ' -f1)
t0=$(now); host_sum=$(b vm exec ex -- cat /root/big | sha256sum | cut -d' ' -f1); t1=$(now)
[ "$guest_sum" = "$host_sum" ] || { echo "100 MB out: sha256 differs" >&2; exit 1; }
echo "100 MB out of the guest through exec: $(ms "$t0" "$t1") ms, sha256 equal"
in=$home/in.bin
head -c 100000000 /dev/urandom > "$in"
t0=$(now); guest_in=$(b vm exec ex -- sha256sum < "$in" | cut -d' ' -f1); t1=$(now)
[ "$guest_in" = "$(sha256sum < "$in" | cut -d' ' -f1)" ] || { echo "100 MB in: sha256 differs" >&2; exit 1; }
echo "100 MB into the guest through exec (stdin): $(ms "$t0" "$t1") ms, sha256 equal"

# Started without a subshell (`ip netns exec` execs banger), so $! is banger itself.
ip netns exec "$ns" "$bin/banger" vm exec ex -- sleep 100 </dev/null &
pid=$!
# Wait until the guest runs it, then Ctrl-C (SIGINT to the client, as a terminal sends).
until b vm exec ex -- pgrep -x sleep >/dev/null 2>&1; do sleep 0.1; done
t0=$(now); kill -INT "$pid"; code=0; wait "$pid" || code=$?; t1=$(now)
echo "Ctrl-C ends sleep 100 in the guest: $(ms "$t0" "$t1") ms (exit code $code)"
b vm exec ex -- sh -c '! pgrep -x sleep' >/dev/null || { echo "sleep still runs in the guest" >&2; exit 1; }
b vm delete ex >/dev/null
