#!/usr/bin/env bash
# `make bench`: throughput and latency of Abacus against a bare axum endpoint on the same HTTP
# stack, in one run, server and load generator pinned to different cores: in-memory, Redis mode
# on one node, and 3 Redis-mode nodes behind nginx round-robin. Plus RSS per idle session,
# session creation rate, Redis memory per idle session, and cold-versus-warm first requests of
# a session on a new node; the cost of OTLP tracing (in memory, exporting to a local sink at
# 10% and 100% sampling); and task creation and `tasks/get` throughput (Tasks extension), in
# memory and in Redis mode on one node. Writes bench-results/latest.md (copy the tables into BENCHMARKS.md).
#
# Env: BENCH_DURATION (s per round, default 3), BENCH_ROUNDS (7), BENCH_CONNECTIONS (64), BENCH_SESSIONS_N (64),
#      BENCH_IDLE_SESSIONS (10000), BENCH_IDLE (poll, or halt to leave the CPUs' idle states alone),
#      BENCH_TRACE_ROUNDS (18) and BENCH_TRACE_DURATION (2 s) for the tracing block.
#
# Idle CPUs poll during the run (the kernel's CPU latency request, /dev/cpu_dma_latency, held at
# 0, as tuned's latency-performance profile does), when this user may ask for it. Why: the load
# generator's core idles while it waits for answers, and waking a halted CPU costs the waking core
# an interrupt; on a virtual machine that is an exit to the hypervisor, several µs per response,
# paid by the server's core and growing as the server gets slower. That is a cost of the test
# rig, not of the server, and it exaggerated every slowdown (the tracing rows most).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DUR="${BENCH_DURATION:-3}"
ROUNDS="${BENCH_ROUNDS:-7}"
CONNS="${BENCH_CONNECTIONS:-64}"
NSESS="${BENCH_SESSIONS_N:-64}"
IDLE="${BENCH_IDLE_SESSIONS:-10000}"
TROUNDS="${BENCH_TRACE_ROUNDS:-18}"
TDUR="${BENCH_TRACE_DURATION:-2}"
OUT="$ROOT/bench-results"
mkdir -p "$OUT"
work="$(mktemp -d)"
pids=()
cleanup() {
  CLUSTER_DIR="$work/cluster" bash "$ROOT/hack/cluster.sh" down >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Servers started inside $(...) recorded their pids in files only.
  for f in "$work"/*.pid; do
    if [[ -e "$f" ]]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null && command -v redis-server >/dev/null && command -v nginx >/dev/null \
  || bash "$ROOT/hack/install-tools.sh" apt
cargo build --release --bin abacus --example bare --example otlp_sink >/dev/null
idle_state=halt
if [[ "${BENCH_IDLE:-poll}" == poll && -w /dev/cpu_dma_latency ]]; then
  # Held while this script runs (the request ends when the descriptor closes).
  exec {latency_fd}>/dev/cpu_dma_latency && printf 0 >&"$latency_fd" && idle_state=poll
fi
ncpu=$(nproc)
srv_cpu=0
gen_cpu=$(( ncpu > 1 ? 1 : 0 ))
pin() { local cpu="$1"; shift; if command -v taskset >/dev/null; then taskset -c "$cpu" "$@"; else "$@"; fi; }

start_abacus() { # name, env...  (runs inside $(...): the pid is kept in $work/NAME.pid for cleanup)
  local name="$1"; shift
  ABACUS_BIN="$ROOT/target/release/abacus" pin "$srv_cpu" "$ROOT/hack/start-server.sh" "$work/$name.pid" "$work/$name.log" "$@"
}

calc_body='{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"calculate","arguments":{"a":6,"b":7,"op":"multiply"}}}'

cpu_ticks() { # pids (comma-separated): their summed user+system CPU ticks
  local total=0 p
  for p in ${1//,/ }; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$total"
}

run_wrk() { # label url sessions.lua server-pid [wrk script, default requests.lua]
  local label="$1" url="$2" lua="$3" spid="$4" script="${5:-$ROOT/hack/bench/requests.lua}"
  local hostport; hostport=$(echo "$url" | sed -E 's#^http://([^/]+)/.*#\1#')
  local t0; t0=$(cpu_ticks "$spid")
  BENCH_SESSIONS="$lua" BENCH_REQUESTS="$lua" pin "$gen_cpu" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency \
    -s "$script" "http://$hostport" >"$work/$label.wrk" 2>&1
  local t1; t1=$(cpu_ticks "$spid")
  echo "cpu_ticks: $((t1 - t0)) $(getconf CLK_TCK)" >>"$work/$label.wrk"
  python3 - "$label" "$work/$label.wrk" >>"$work/rounds.tsv" <<'PY'
import re, sys
label, path = sys.argv[1], sys.argv[2]
t = open(path).read()
def ms(tok):
    m = re.match(r"([\d.]+)(us|ms|s)", tok)
    if m is None:
        sys.exit(f"cannot read a latency from {tok!r} in:\n{t}")
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
total = int(re.search(r"(\d+) requests in", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
rpc = re.search(r"JSON-RPC errors: (\d+)", t)
errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0) \
    + (int(rpc.group(1)) if rpc else 0)
ticks, hz = map(int, re.search(r"cpu_ticks: (\d+) (\d+)", t).groups())
cpu_us = ticks / hz * 1e6 / max(total, 1)
print(f"{label}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{errors}\t{total}\t{cpu_us:.2f}")
PY
}

# Both servers run side by side; short rounds alternate between them so that the noise of a
# shared machine hits both alike, and medians over the rounds are reported.
BARE_LOG="$work/bare.log"
if command -v taskset >/dev/null; then
  PORT=0 taskset -c "$srv_cpu" "$ROOT/target/release/examples/bare" >"$BARE_LOG" 2>&1 &
else
  PORT=0 "$ROOT/target/release/examples/bare" >"$BARE_LOG" 2>&1 &
fi
pids+=("$!")
for _ in $(seq 50); do grep -q listening "$BARE_LOG" && break; sleep 0.1; done
bare_url="http://$(sed -n 's/^bare listening on //p' "$BARE_LOG")/mcp"
bare_pid="${pids[-1]}"
echo "$bare_pid" >"$work/bare.pid"
python3 -c 'import json,sys; print("sessions = {\"\"}\nbody = " + json.dumps(sys.argv[1]))' "$calc_body" >"$work/bare.lua"

url=$(start_abacus mem RATE_LIMIT_MAX=0 LOG_LEVEL=warn MAX_SESSIONS=1000000)
python3 "$ROOT/hack/bench/sessions.py" "$url" "$NSESS" "$work/mem.lua" "$calc_body"
mem_pid="$(cat "$work/mem.pid")"

# Tracing on, exporting over OTLP/HTTP to a sink on the load generator's core (it only counts):
# parent-based 10% sampling (a session's `initialize` decides for all its calls) and 100%,
# against the same server with tracing off.
SINK_LOG="$work/sink.log"
PORT=0 pin "$gen_cpu" "$ROOT/target/release/examples/otlp_sink" >"$SINK_LOG" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do grep -q listening "$SINK_LOG" && break; sleep 0.1; done
sink="http://$(sed -n 's/^otlp sink listening on //p' "$SINK_LOG")"
# Ten times the sessions: a session is sampled or not as a whole, and 640 keep the sampled
# share of requests near 10%. All three tracing rows (off, 10%, 100%) use the same 640 sessions,
# since more sessions alone cost about 9% of throughput here (history appends on colder data).
TSESS=$((NSESS * 10))
turl0=$(start_abacus traces0 RATE_LIMIT_MAX=0 LOG_LEVEL=warn MAX_SESSIONS=1000000)
python3 "$ROOT/hack/bench/sessions.py" "$turl0" "$TSESS" "$work/traces0.lua" "$calc_body"
traces0_pid="$(cat "$work/traces0.pid")"
turl10=$(start_abacus traces10 RATE_LIMIT_MAX=0 LOG_LEVEL=warn MAX_SESSIONS=1000000 \
  OTEL_EXPORTER_OTLP_ENDPOINT="$sink" OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
python3 "$ROOT/hack/bench/sessions.py" "$turl10" "$TSESS" "$work/traces10.lua" "$calc_body"
traces10_pid="$(cat "$work/traces10.pid")"
turl100=$(start_abacus traces100 RATE_LIMIT_MAX=0 LOG_LEVEL=warn MAX_SESSIONS=1000000 \
  OTEL_EXPORTER_OTLP_ENDPOINT="$sink" OTEL_TRACES_SAMPLER=parentbased_always_on)
python3 "$ROOT/hack/bench/sessions.py" "$turl100" "$TSESS" "$work/traces100.lua" "$calc_body"
traces100_pid="$(cat "$work/traces100.pid")"

# Redis mode: a private redis-server (no persistence) on the load generator's core, so that the
# server core's budget is what both modes are measured against.
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# (taskset directly, not the pin function, so that $! is redis-server itself)
if command -v taskset >/dev/null; then tset=(taskset -c "$gen_cpu"); else tset=(); fi
"${tset[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis_url="redis://127.0.0.1:$redis_port"
rurl=$(start_abacus redis1 RATE_LIMIT_MAX=0 LOG_LEVEL=warn MAX_SESSIONS=1000000 USE_REDIS=true REDIS_URL="$redis_url")
python3 "$ROOT/hack/bench/sessions.py" "$rurl" "$NSESS" "$work/redis1.lua" "$calc_body"
redis1_pid="$(cat "$work/redis1.pid")"

# Tasks (the Tasks extension, 2026-07-28 requests): creating one (a 1 ms `slow_compute`, stored
# before the answer) and reading a finished one with `tasks/get`, in memory and in Redis mode.
modern="$ROOT/hack/bench/modern.lua"
tmurl=$(start_abacus tasksmem RATE_LIMIT_MAX=0 LOG_LEVEL=warn TOOLSETS=calculator,conformance)
python3 "$ROOT/hack/bench/tasks.py" "$tmurl" create "$work/tcreate-mem.lua"
python3 "$ROOT/hack/bench/tasks.py" "$tmurl" get "$work/tget-mem.lua" "$NSESS"
tasksmem_pid="$(cat "$work/tasksmem.pid")"
trurl=$(start_abacus tasksredis RATE_LIMIT_MAX=0 LOG_LEVEL=warn TOOLSETS=calculator,conformance \
  USE_REDIS=true REDIS_URL="$redis_url")
python3 "$ROOT/hack/bench/tasks.py" "$trurl" create "$work/tcreate-redis.lua"
python3 "$ROOT/hack/bench/tasks.py" "$trurl" get "$work/tget-redis.lua" "$NSESS"
tasksredis_pid="$(cat "$work/tasksredis.pid")"

# 3 Redis-mode nodes behind nginx, all on the server core: this shows the cost of the extra hop
# and of cross-node traffic, not scaling (which needs more cores than this machine has). The CPU
# column sums the three nodes (nginx excluded).
lburl=$(CLUSTER_DIR="$work/cluster" LB_PORT=0 ABACUS_BIN="$ROOT/target/release/abacus" \
  pin "$srv_cpu" bash "$ROOT/hack/cluster.sh" up 3 REDIS_URL="$redis_url" LOG_LEVEL=warn MAX_SESSIONS=1000000 | tail -1)
python3 "$ROOT/hack/bench/sessions.py" "$lburl" "$NSESS" "$work/lb.lua" "$calc_body"
nodes_pids=$(cat "$work/cluster"/node[0-9].pid | paste -sd, -)

: >"$work/rounds.tsv"
for round in $(seq 1 "$ROUNDS"); do
  run_wrk "bare-axum" "$bare_url" "$work/bare.lua" "$bare_pid"
  run_wrk "abacus-memory" "$url" "$work/mem.lua" "$mem_pid"
  run_wrk "abacus-redis-1-node" "$rurl" "$work/redis1.lua" "$redis1_pid"
  run_wrk "abacus-redis-3-nodes-nginx" "$lburl" "$work/lb.lua" "$nodes_pids"
  run_wrk "abacus-tasks-create-memory" "$tmurl" "$work/tcreate-mem.lua" "$tasksmem_pid" "$modern"
  run_wrk "abacus-tasks-get-memory" "$tmurl" "$work/tget-mem.lua" "$tasksmem_pid" "$modern"
  run_wrk "abacus-tasks-create-redis-1-node" "$trurl" "$work/tcreate-redis.lua" "$tasksredis_pid" "$modern"
  run_wrk "abacus-tasks-get-redis-1-node" "$trurl" "$work/tget-redis.lua" "$tasksredis_pid" "$modern"
done
curl -fsS "${url%/mcp}/metrics" >"$work/metrics.txt"

# The cost of tracing in a block of its own: short rounds of the three servers back to back,
# their order rotating, so that each round compares runs a few seconds apart. This machine's
# speed swings within a minute; inside the long rounds above, the per-round ratios of the same
# two servers spread from 0.65 to 1.4.
trace_target() { # 0 off, 1 10%, 2 100%
  case "$1" in
    0) run_wrk "abacus-memory-640-sessions-traces-off" "$turl0" "$work/traces0.lua" "$traces0_pid" ;;
    1) run_wrk "abacus-memory-traces-10pct" "$turl10" "$work/traces10.lua" "$traces10_pid" ;;
    2) run_wrk "abacus-memory-traces-100pct" "$turl100" "$work/traces100.lua" "$traces100_pid" ;;
  esac
}
# Every order of the three, in turn: each server runs first, second and last equally often and
# follows each of the others equally often (a rotation alone keeps one cyclic order).
orders=("0 1 2" "1 2 0" "2 0 1" "0 2 1" "2 1 0" "1 0 2")
for round in $(seq 1 "$TROUNDS"); do
  for i in ${orders[$(( (round - 1) % 6 ))]}; do DUR="$TDUR" trace_target "$i"; done
done
spans_of() { # url: "exported dropped failed" spans of that node
  curl -fsS "${1%/mcp}/metrics" | awk -F'[ ]' '
    /^abacus_trace_spans_total\{outcome="exported"\}/ {e=$2}
    /^abacus_trace_spans_total\{outcome="dropped"\}/ {d=$2}
    /^abacus_trace_spans_total\{outcome="failed"\}/ {f=$2}
    END {print e+0, d+0, f+0}'
}
sleep 6 # one batch interval: what is queued reaches the sink
spans10=$(spans_of "$turl10")
spans100=$(spans_of "$turl100")
sink_stats=$(curl -fsS "$sink/stats")
calcs=$(sed -n 's/^mcp_calculations_total{operation="multiply"} //p' "$work/metrics.txt")
cp "$work/rounds.tsv" "$work/results.tsv"

# Cold (first request of a session on a node that never saw it) versus warm, in Redis mode.
node0="http://127.0.0.1:$(cat "$work/cluster/node0.port")/mcp"
node1="http://127.0.0.1:$(cat "$work/cluster/node1.port")/mcp"
coldwarm=$(python3 "$ROOT/hack/bench/coldwarm.py" "$node0" "$node1" 500)
CLUSTER_DIR="$work/cluster" bash "$ROOT/hack/cluster.sh" down >/dev/null 2>&1 || true

# 3. Session creation rate and RSS per idle session (fresh process).
url=$(start_abacus idle RATE_LIMIT_MAX=0 LOG_LEVEL=warn MAX_SESSIONS=1000000)
pid=$(cat "$work/idle.pid")
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss "$pid")
start=$(date +%s.%N)
python3 "$ROOT/hack/bench/sessions.py" "$url" "$IDLE" "$work/idle.lua" "{}"
end=$(date +%s.%N)
after=$(rss "$pid")

# Redis memory per idle session (no history), on an empty database.
redis-cli -p "$redis_port" flushall >/dev/null
rmem_before=$(redis-cli -p "$redis_port" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
python3 "$ROOT/hack/bench/sessions.py" "$rurl" "$IDLE" "$work/ridle.lua" "{}"
rmem_after=$(redis-cli -p "$redis_port" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
rkeys=$(redis-cli -p "$redis_port" dbsize)

python3 - "$work/results.tsv" "$before" "$after" "$IDLE" "$start" "$end" "${calcs:-0}" "$DUR" "$CONNS" "$NSESS" "$ROUNDS" \
  "$rmem_before" "$rmem_after" "$rkeys" "$coldwarm" "$spans10" "$spans100" "$sink_stats" "$idle_state" "$TROUNDS" "$TDUR" >"$OUT/latest.md" <<'PY'
import sys, datetime, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
before, after, n = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
secs = float(sys.argv[6]) - float(sys.argv[5])
calcs, dur, conns, nsess, rounds = sys.argv[7], sys.argv[8], sys.argv[9], sys.argv[10], sys.argv[11]
labels = []
for r in rows:
    if r[0] not in labels:
        labels.append(r[0])
by = {l: [r for r in rows if r[0] == l] for l in labels}
def median_row(rs):
    rs = sorted(rs, key=lambda r: float(r[1]))
    return rs[len(rs) // 2]
bare = float(median_row(by["bare-axum"])[1])
idle = sys.argv[19]
print(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: {rounds} alternating rounds of wrk -t1 -c{conns} -d{dur}s per target, {nsess} sessions, server and wrk pinned to separate cores, idle CPUs {'polling (CPU latency request 0)' if idle == 'poll' else 'halting (default idle states)'}. Tracing rows: a block of their own, {sys.argv[20]} rounds of -d{sys.argv[21]}s, the three servers back to back in each of their six orders in turn. Medians over the rounds.\n")
cpu = {l: statistics.median(float(r[6]) for r in by[l]) for l in labels}
print("| target | req/s (median) | p50 ms | p99 ms | errors (all rounds) | requests (all rounds) | throughput ratio to bare | server CPU µs/request (median) | CPU-efficiency ratio to bare |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for l in labels:
    m = median_row(by[l])
    errs = sum(int(r[4]) for r in by[l])
    total = sum(int(r[5]) for r in by[l])
    print(f"| {l} | {m[1]} | {m[2]} | {m[3]} | {errs} | {total} | {float(m[1]) / bare:.2f} | {cpu[l]:.1f} | {cpu['bare-axum'] / cpu[l]:.2f} |")
pairs = list(zip(by["bare-axum"], by["abacus-memory"]))
print()
print("Per-round throughput ratios abacus-memory / bare-axum: " + ", ".join(f"{float(a[1]) / float(b[1]):.2f}" for b, a in pairs))
mem = float(median_row(by["abacus-memory"])[1])
for l in ("abacus-redis-1-node", "abacus-redis-3-nodes-nginx"):
    if l in by:
        print(f"Redis ratio {l} / abacus-memory (medians): {float(median_row(by[l])[1]) / mem:.2f}; per round: "
              + ", ".join(f"{float(r[1]) / float(m[1]):.2f}" for m, r in zip(by["abacus-memory"], by[l])))
for mode in ("memory", "redis-1-node"):
    c, g = f"abacus-tasks-create-{mode}", f"abacus-tasks-get-{mode}"
    if c in by and g in by:
        print(f"Tasks ({mode}): creation {median_row(by[c])[1]} tasks/s, tasks/get {median_row(by[g])[1]} req/s (medians); "
              f"ratio to abacus-memory tools/call: creation {float(median_row(by[c])[1]) / mem:.2f}, tasks/get {float(median_row(by[g])[1]) / mem:.2f}")
toff = "abacus-memory-640-sessions-traces-off"
for l in ("abacus-memory-traces-10pct", "abacus-memory-traces-100pct"):
    if l in by and toff in by:
        base = float(median_row(by[toff])[1])
        ratio = float(median_row(by[l])[1]) / base
        cost = (cpu[l] - cpu[toff]) / cpu[toff] * 100
        per_round = [float(r[1]) / float(m[1]) for m, r in zip(by[toff], by[l])]
        print(f"Tracing cost {l} / {toff} (medians, same 640 sessions): {ratio:.2f} ({(1 - ratio) * 100:.1f}% fewer requests/s; "
              f"server CPU per request +{cost:.0f}%); median of the per-round ratios {statistics.median(per_round):.2f}; per round: "
              + ", ".join(f"{x:.2f}" for x in per_round))
print(f"Spans (exported dropped failed) after the rounds: 10% {sys.argv[16]}; 100% {sys.argv[17]}; the sink received (requests bytes) {sys.argv[18]}")
if "abacus-memory-traces-10pct" in by and "abacus-memory-traces-100pct" in by:
    e10, e100 = int(float(sys.argv[16].split()[0])), int(float(sys.argv[17].split()[0]))
    n10 = sum(int(r[5]) for r in by["abacus-memory-traces-10pct"])
    n100 = sum(int(r[5]) for r in by["abacus-memory-traces-100pct"])
    if e100 and n10:
        print(f"Sampled share of requests at 10%: {(e10 / n10) / (e100 / n100) * 100:.1f}% (spans per request at 10% over spans per request at 100%)")
print("Per-round CPU-efficiency ratios (bare CPU per request / Abacus CPU per request): " + ", ".join(f"{float(b[6]) / float(a[6]):.2f}" for b, a in pairs))
print()
print(f"- calculations recorded by the server during the Abacus rounds: {calcs} (requests sent: {sum(int(r[5]) for r in by['abacus-memory'])})")
print(f"- RSS per idle session ({n} sessions): {(after - before) * 1024 / n:.0f} bytes (RSS {before} KiB -> {after} KiB)")
print(f"- session creation (initialize + initialized, one sequential Python client): {n / secs:.0f} sessions/s")
rb, ra, rkeys = int(sys.argv[12]), int(sys.argv[13]), sys.argv[14]
print(f"- Redis memory per idle session ({n} sessions, no history): {(ra - rb) / n:.0f} bytes (used_memory {rb} -> {ra}; {rkeys} keys)")
c50, c99, w50, w99 = map(float, sys.argv[15].split())
print(f"- first request of a session on a node that never saw it (cold) vs the next (warm), 500 sessions, sequential: "
      f"cold p50 {c50:.3f} ms / p99 {c99:.3f} ms, warm p50 {w50:.3f} ms / p99 {w99:.3f} ms; cold adds {c99 - w99:.3f} ms at p99")
PY
cat "$OUT/latest.md"
