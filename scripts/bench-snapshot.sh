#!/usr/bin/env bash
# Benchmark: snapshot-based starts against cold boots, in one run on one machine:
#   - cold create → first exec (`vm create --cold`) vs warm create → first exec (the image's
#     template restored and reidentified), N runs each (default 5), p50;
#   - fork of a running VM → first exec in the child (N runs), and `fork --count 4` until all
#     four answer;
#   - suspend → resume → first exec (N runs);
#   - host memory (RSS and PSS summed over the VMMs) of 4 idle fork children vs 4 cold-booted
#     VMs;
#   - QEMU RSS of an idle, cold-booted VM (after some guest work) with TCG's translation cache
#     at QEMU's default (1 GiB) and at banger's cap (config qemu_tb_size_mib), with boot time.
# Runs in a throwaway network namespace (scripts/lib.sh bench_env).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-5}
bench_env
b() { ip netns exec "$ns" "$bin/banger" "$@"; }
bench_cleanup_hook() {
  local all
  all=$(b vm list --json 2>/dev/null | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)))' || true)
  [ -z "$all" ] || b vm delete $all >/dev/null 2>&1
}
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
pct() { grep . | sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.5); if(i<1)i=1; print a[i]}'; }
summary() { echo "$1: p50 $(pct 50 <<<"$2") ms, min $(pct 0 <<<"$2") ms, max $(pct 100 <<<"$2") ms ($runs runs)"; }
# Sum of a `vm stats` field over the named VMs.
stat_sum() {
  local field=$1; shift
  b vm stats --json "$@" | python3 -c "import json,sys; print(sum(s.get('$field') or 0 for s in json.load(sys.stdin)))"
}

# Cold: no template is made or used.
cold=""
for i in $(seq "$runs"); do
  t0=$(now); b vm create --cold --name cold$i >/dev/null 2>&1; b vm exec cold$i -- true; t1=$(now)
  cold+="$(ms "$t0" "$t1")"$'\n'
  b vm delete cold$i >/dev/null
done
# The first warm-capable create boots cold and leaves the image's template.
b vm create --name seed >/dev/null 2>&1
b vm delete seed >/dev/null
warm=""
for i in $(seq "$runs"); do
  t0=$(now); b vm create --name warm$i >/dev/null 2>&1; b vm exec warm$i -- true; t1=$(now)
  warm+="$(ms "$t0" "$t1")"$'\n'
  b vm show warm$i | grep -q 'started  *template' || { echo "warm$i did not start from the template" >&2; exit 1; }
  [ "$i" -eq 1 ] || b vm delete warm$i >/dev/null
done
summary "cold create → first exec" "$cold"
summary "warm create (template) → first exec" "$warm"
x10=$(( $(pct 50 <<<"$cold") * 10 / $(pct 50 <<<"$warm") ))
echo "warm vs cold (p50): $((x10 / 10)).$((x10 % 10))× faster"

# Fork of warm1 → first exec in the child.
fork=""
for i in $(seq "$runs"); do
  t0=$(now); b vm fork warm1 --name kid$i >/dev/null 2>&1; b vm exec kid$i -- true; t1=$(now)
  fork+="$(ms "$t0" "$t1")"$'\n'
  b vm delete kid$i >/dev/null
done
summary "fork → first exec in the child" "$fork"
t0=$(now)
b vm fork warm1 --count 4 --name quad >/dev/null 2>&1
for k in 1 2 3 4; do b vm exec quad-$k -- true; done
t1=$(now)
echo "fork --count 4 → all four answer exec: $(ms "$t0" "$t1") ms"

# Suspend → resume → first exec.
sus=""; res=""
for i in $(seq "$runs"); do
  t0=$(now); b vm stop --suspend warm1 >/dev/null; t1=$(now)
  b vm start warm1 >/dev/null; b vm exec warm1 -- true; t2=$(now)
  sus+="$(ms "$t0" "$t1")"$'\n'; res+="$(ms "$t1" "$t2")"$'\n'
done
summary "suspend" "$sus"
summary "resume → first exec" "$res"
b vm exec warm1 -- true

# Memory: 4 idle children vs 4 cold-booted VMs.
for k in 1 2 3 4; do b vm create --cold --name big$k >/dev/null 2>&1; done
sleep 10
echo "4 fork children: VMM RSS $(stat_sum rss_mib quad-1 quad-2 quad-3 quad-4) MiB, PSS $(stat_sum pss_mib quad-1 quad-2 quad-3 quad-4) MiB (summed)"
echo "4 cold-booted VMs: VMM RSS $(stat_sum rss_mib big1 big2 big3 big4) MiB, PSS $(stat_sum pss_mib big1 big2 big3 big4) MiB (summed)"
bench_cleanup_hook

# Translation cache: QEMU's default against banger's cap, one idle VM each after the same
# guest work.
tb() {
  printf 'qemu_tb_size_mib = %s\nwarm_start = false\n' "$1" > "$BANGER_HOME/config/config.toml"
  b daemon stop >/dev/null 2>&1 || true
  local t0 t1 rss used
  t0=$(now); b vm create --name tb >/dev/null 2>&1; b vm exec tb -- true; t1=$(now)
  b vm exec tb -- sh -c 'for i in 1 2 3; do find / -xdev >/dev/null 2>&1; ls -lR /usr >/dev/null 2>&1; apt-get --help >/dev/null; python3 -c 1 2>/dev/null || true; done'
  sleep 5
  rss=$(stat_sum rss_mib tb)
  used=$(b vm stats --json tb | python3 -c 'import json,sys; g=json.load(sys.stdin)[0]["guest"]; print(g["mem_total_mib"]-g["mem_available_mib"])')
  echo "tb-size $2: boot → first exec $(ms "$t0" "$t1") ms, QEMU RSS $rss MiB with $used MiB in use in the guest (RSS over guest use: $((rss - used)) MiB)"
  b vm delete tb >/dev/null
}
mkdir -p "$BANGER_HOME/config"
tb 0 "QEMU default (1 GiB)"
tb 128 "128 MiB (banger's default)"
tb 64 "64 MiB"
