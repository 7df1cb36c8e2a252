#!/usr/bin/env bash
# Benchmark: sustained RPC load on a real bangerd (release build) — C clients (default 4),
# each one connection sending `ping` and `vm.list` alternately as fast as answers come, for
# S seconds (default 60), while 100 more connections sit half-way through a frame. Prints
# requests/s, the slowest answer, and bangerd's RSS at the start and its peak (VmHWM).
# Host namespace is fine: the daemon serves only its socket here (no taps, no DNS).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-4}
secs=${2:-60}
cargo build --release --bins --locked >&2
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release
home=$(mktemp -d /tmp/banger-load.XXXXXX)
trap 'BANGER_HOME=$home "$bin/banger" daemon stop >/dev/null 2>&1 || true; rm -rf "$home"' EXIT
mkdir -p "$home/config"
printf 'tap_pool_size = 0\ndns_listen = ""\n' > "$home/config/config.toml"
export BANGER_HOME=$home
"$bin/banger" ping >&2
pid=$("$bin/banger" daemon status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ping"]["pid"])')
python3 - "$home/run/bangerd.sock" "$clients" "$secs" "$pid" <<'PY'
import json, multiprocessing as mp, socket, sys, time
sock_path, clients, secs, pid = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def rss(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    return 0

def worker(q):
    s = socket.socket(socket.AF_UNIX); s.connect(sock_path)
    f = s.makefile("rb")
    n, worst, end, i = 0, 0.0, time.monotonic() + secs, 0
    while time.monotonic() < end:
        i += 1
        method = "ping" if i % 2 else "vm.list"
        t0 = time.monotonic()
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": {}, "protocol": 2}).encode() + b"\n")
        line = f.readline()
        worst = max(worst, time.monotonic() - t0)
        assert b'"result"' in line, line
        n += 1
    q.put((n, worst))

stalled = []
for _ in range(100):
    c = socket.socket(socket.AF_UNIX); c.connect(sock_path)
    c.sendall(b'{"jsonrpc":"2.0","id":1,"meth')
    stalled.append(c)
start_rss = rss("VmRSS:")
q = mp.Queue()
procs = [mp.Process(target=worker, args=(q,)) for _ in range(clients)]
t0 = time.monotonic()
for p in procs: p.start()
results = [q.get() for _ in procs]
for p in procs: p.join()
elapsed = time.monotonic() - t0
total = sum(n for n, _ in results)
print(f"{clients} clients x {secs:.0f} s, 100 stalled connections: {total / elapsed:.0f} requests/s "
      f"({total} answered), slowest answer {max(w for _, w in results) * 1000:.1f} ms; "
      f"bangerd RSS {start_rss} MiB at the start, peak {rss('VmHWM:')} MiB, {rss('VmRSS:')} MiB at the end")
PY
