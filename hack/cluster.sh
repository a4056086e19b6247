#!/usr/bin/env bash
# A local Abacus cluster: a private redis-server, N nodes of the release binary sharing it, and
# nginx round-robin (no stickiness) in front of them. State lives in $CLUSTER_DIR (default
# .cluster/ at the repo root): pid files, ports, logs, the nginx prefix and the Redis data.
#
#   hack/cluster.sh up N [ENV=VALUE ...]   start; prints the LB URL http://127.0.0.1:PORT/mcp as
#                                          the last stdout line and writes it to $CLUSTER_DIR/url
#   hack/cluster.sh down                   stop everything (nginx, nodes, redis)
#   hack/cluster.sh status                 what runs where (exit 0 if everything is up)
#   hack/cluster.sh url                    the LB URL
#   hack/cluster.sh ports                  the node ports, one line per node in node order
#                                          (node I listens on 127.0.0.1:PORT; also $CLUSTER_DIR/nodeI.port)
#   hack/cluster.sh kill I                 SIGKILL node I (0-based)
#   hack/cluster.sh stop I                 SIGTERM node I and wait for it to drain and exit
#   hack/cluster.sh restart I              start node I again (same port, same env)
#
# Nodes get USE_REDIS=true REDIS_URL=<private redis> RATE_LIMIT_MAX=0 HOST=127.0.0.1, then the
# ENV=VALUE arguments (which win), then their fixed PORT. Passing REDIS_URL=... uses that Redis
# instead of starting one. Environment knobs:
#   LB_PORT      load balancer port (default 8080; 0 picks a free port)
#   REDIS_AOF=1  run the private Redis with --appendonly yes --appendfsync always
#   ABACUS_BIN   binary (default target/release/abacus)
#   CLUSTER_DIR  state directory (default <repo>/.cluster)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${CLUSTER_DIR:-$ROOT/.cluster}"
BIN="${ABACUS_BIN:-$ROOT/target/release/abacus}"
TEMPLATE="$ROOT/hack/nginx-cluster.conf.in"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

find_tool() {
  local name=$1 d
  command -v "$name" 2>/dev/null && return 0
  for d in /usr/sbin /usr/local/sbin /sbin; do
    [[ -x "$d/$name" ]] && { echo "$d/$name"; return 0; }
  done
  die "$name not found: install it with 'bash hack/install-tools.sh apt'"
}

# free_ports K: K distinct loopback ports that were free a moment ago.
free_ports() {
  local k=$1
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$k" <<'PY' && return 0
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
  fi
  local seen=" " p n=0
  while ((n < k)); do
    p=$((20000 + RANDOM % 30000))
    [[ "$seen" == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; seen+="$p "; n=$((n + 1))
    fi
  done
}

# running PID: the process exists and is not a zombie (processes left by an earlier run of this
# script are reparented to whatever reaps orphans here, which may take its time).
running() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [[ -n "$st" && "$st" != Z ]]
}

# alive PIDFILE NAME: the pid in PIDFILE runs a process whose command line mentions NAME
# (guards against pid reuse).
alive() {
  local pidfile=$1 name=$2 pid
  [[ -f "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  [[ -n "$pid" ]] && running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    running "$pid" || return 0
    sleep 0.1
  done
  ! running "$pid"
}

# stop_proc PIDFILE NAME SECONDS [SIGNAL]: signal (default TERM), wait, then SIGKILL (with the
# process's children, for nginx workers); removes the pid file.
stop_proc() {
  local pidfile=$1 name=$2 secs=$3 sig=${4:-TERM} pid kids
  if alive "$pidfile" "$name"; then
    pid=$(<"$pidfile")
    stopped+=("$pid")
    kids=$(pgrep -P "$pid" || true)
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$secs"; then
      log "$name (pid $pid) still running after ${secs}s: SIGKILL"
      # shellcheck disable=SC2086
      kill -KILL "$pid" $kids 2>/dev/null || true
      wait_gone "$pid" 2 || true
    fi
  fi
  rm -f "$pidfile"
}

node_count() { cat "$DIR/nodes" 2>/dev/null || echo 0; }

start_redis() {
  local port=$1 redis aof=(--appendonly no)
  redis="$(find_tool redis-server)"
  [[ "${REDIS_AOF:-0}" == 1 ]] && aof=(--appendonly yes --appendfsync always)
  mkdir -p "$DIR/redis"
  nohup "$redis" --port "$port" --bind 127.0.0.1 --dir "$DIR/redis" --save "" \
    "${aof[@]}" --daemonize no --logfile "$DIR/redis.log" \
    </dev/null >"$DIR/redis.out" 2>&1 &
  echo $! >"$DIR/redis.pid"
  echo "$port" >"$DIR/redis.port"
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ "$(printf 'PING\r\n' | timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; cat >&3; head -c 5 <&3" 2>/dev/null)" == "+PONG" ]]; then
      log "redis-server on 127.0.0.1:$port (pid $(<"$DIR/redis.pid"))"
      return 0
    fi
    alive "$DIR/redis.pid" redis-server || { cat "$DIR/redis.out" "$DIR/redis.log" >&2 2>/dev/null; die "redis-server exited"; }
    sleep 0.1
  done
  die "redis-server did not answer PING; see $DIR/redis.log"
}

# start_node I: starts node I on its recorded port with the recorded env.
start_node() {
  local i=$1 port env_args=() line
  port=$(<"$DIR/node$i.port")
  while IFS= read -r line; do env_args+=("$line"); done <"$DIR/node.env"
  [[ -x "$BIN" ]] || die "$BIN not found: run 'cargo build --release --bin abacus' (or make release)"
  local j
  for ((j = 0; j < 50; j++)); do # the port may still be held briefly after a kill
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    sleep 0.1
  done
  nohup env HOST=127.0.0.1 "${env_args[@]}" PORT="$port" "$BIN" \
    </dev/null >>"$DIR/node$i.log" 2>&1 &
  echo $! >"$DIR/node$i.pid"
  for ((j = 0; j < 200; j++)); do
    if curl -fsS --noproxy '*' -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then
      log "node $i on 127.0.0.1:$port (pid $(<"$DIR/node$i.pid"))"
      return 0
    fi
    if ! alive "$DIR/node$i.pid" abacus; then
      tail -n 20 "$DIR/node$i.log" >&2
      die "node $i exited; log: $DIR/node$i.log"
    fi
    sleep 0.1
  done
  die "node $i did not become healthy; log: $DIR/node$i.log"
}

write_nginx_conf() {
  local lb=$1 user="" servers="" i tmpl
  [[ "$(id -u)" -eq 0 ]] && user="user root;"
  for ((i = 0; i < $(node_count); i++)); do
    servers+="        server 127.0.0.1:$(<"$DIR/node$i.port") max_fails=0;"$'\n'
  done
  servers="${servers%$'\n'}"
  tmpl="$(<"$TEMPLATE")"
  tmpl="${tmpl//@USER@/"$user"}"
  tmpl="${tmpl//@PREFIX@/"$DIR/nginx"}"
  tmpl="${tmpl//@LISTEN@/"127.0.0.1:$lb"}"
  tmpl="${tmpl//@SERVERS@/"$servers"}"
  printf '%s\n' "$tmpl" >"$DIR/nginx/nginx.conf"
}

start_nginx() {
  local lb=$1 nginx
  nginx="$(find_tool nginx)"
  mkdir -p "$DIR/nginx"
  write_nginx_conf "$lb"
  nohup "$nginx" -p "$DIR/nginx/" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log" \
    </dev/null >"$DIR/nginx.out" 2>&1 &
  echo $! >"$DIR/nginx.pid"
  echo "$lb" >"$DIR/lb.port"
  local i
  for ((i = 0; i < 100; i++)); do
    if curl -fsS --noproxy '*' -o /dev/null "http://127.0.0.1:$lb/health" 2>/dev/null; then
      log "nginx on 127.0.0.1:$lb (pid $(<"$DIR/nginx.pid"))"
      return 0
    fi
    if ! alive "$DIR/nginx.pid" nginx; then
      cat "$DIR/nginx.out" >&2
      die "nginx exited (port $lb taken? try LB_PORT=0); log: $DIR/nginx/error.log"
    fi
    sleep 0.1
  done
  die "nginx did not answer /health on port $lb; log: $DIR/nginx/error.log"
}

any_alive() {
  local i
  alive "$DIR/nginx.pid" nginx && return 0
  alive "$DIR/redis.pid" redis-server && return 0
  for ((i = 0; i < $(node_count); i++)); do
    alive "$DIR/node$i.pid" abacus && return 0
  done
  return 1
}

cmd_up() {
  local n=${1:-}
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "usage: hack/cluster.sh up N [ENV=VALUE ...]"
  shift
  local a
  for a in "$@"; do
    [[ "$a" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "not an ENV=VALUE assignment: $a"
  done
  if any_alive; then die "a cluster is already running in $DIR (hack/cluster.sh down first)"; fi
  # Fresh state: only what this script creates.
  rm -rf "$DIR/redis" "$DIR/nginx" "$DIR"/*.pid "$DIR"/*.port "$DIR"/*.log "$DIR"/*.out \
    "$DIR/url" "$DIR/nodes" "$DIR/node.env"
  mkdir -p "$DIR"
  trap 'log "start failed; stopping what was started"; cmd_down >/dev/null 2>&1 || true' EXIT

  local lb=${LB_PORT:-8080} ports redis_url="" i
  mapfile -t ports < <(free_ports $((n + 1)))
  [[ "$lb" == 0 ]] && lb=$(free_ports 1)
  for a in "$@"; do [[ "$a" == REDIS_URL=* ]] && redis_url=${a#REDIS_URL=}; done
  if [[ -z "$redis_url" ]]; then
    start_redis "${ports[$n]}"
    redis_url="redis://127.0.0.1:${ports[$n]}"
  fi
  printf '%s\n' USE_REDIS=true "REDIS_URL=$redis_url" RATE_LIMIT_MAX=0 "$@" >"$DIR/node.env"
  echo "$n" >"$DIR/nodes"
  for ((i = 0; i < n; i++)); do
    echo "${ports[$i]}" >"$DIR/node$i.port"
    start_node "$i"
  done
  start_nginx "$lb"
  echo "http://127.0.0.1:$lb/mcp" >"$DIR/url"
  trap - EXIT
  cat "$DIR/url"
}

stopped=()

cmd_down() {
  local i n p
  n=$(node_count)
  stop_proc "$DIR/nginx.pid" nginx 5
  for ((i = 0; i < n; i++)); do
    [[ -f "$DIR/node$i.pid" ]] && stop_proc "$DIR/node$i.pid" abacus 15
  done
  stop_proc "$DIR/redis.pid" redis-server 10
  # Give whoever reaps orphans a moment, so no <defunct> entries linger in ps right after.
  for p in "${stopped[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -f "$DIR/url"
  log "stopped (logs kept in $DIR)"
}

cmd_status() {
  [[ -f "$DIR/nodes" ]] || { echo "no cluster in $DIR"; return 3; }
  local ok=0 i state
  show() { # show NAME PIDFILE PROCNAME PORTFILE
    if alive "$2" "$3"; then state="up   pid $(<"$2")"; else state="DOWN"; ok=3; fi
    printf '%-8s %-16s 127.0.0.1:%s\n' "$1" "$state" "$(cat "$4" 2>/dev/null || echo '?')"
  }
  if [[ -f "$DIR/redis.port" ]]; then show redis "$DIR/redis.pid" redis-server "$DIR/redis.port"; fi
  for ((i = 0; i < $(node_count); i++)); do
    show "node$i" "$DIR/node$i.pid" abacus "$DIR/node$i.port"
  done
  show nginx "$DIR/nginx.pid" nginx "$DIR/lb.port"
  [[ -f "$DIR/url" ]] && echo "url      $(<"$DIR/url")"
  return $ok
}

node_arg() {
  local i=${1:-}
  [[ "$i" =~ ^[0-9]+$ && "$i" -lt "$(node_count)" ]] || die "no node '$i' (0..$(($(node_count) - 1)))"
  echo "$i"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  url) cat "$DIR/url" 2>/dev/null || die "no cluster running in $DIR" ;;
  kill) i=$(node_arg "${2:-}"); stop_proc "$DIR/node$i.pid" abacus 5 KILL; log "node $i killed" ;;
  stop) i=$(node_arg "${2:-}"); stop_proc "$DIR/node$i.pid" abacus 30; log "node $i stopped" ;;
  restart)
    i=$(node_arg "${2:-}")
    alive "$DIR/node$i.pid" abacus && die "node $i is running (kill or stop it first)"
    start_node "$i"
    ;;
  ports)
    [[ -f "$DIR/nodes" ]] || die "no cluster in $DIR"
    for ((i = 0; i < $(node_count); i++)); do cat "$DIR/node$i.port"; done
    ;;
  -h | --help | help | "") sed -n '2,23p' "${BASH_SOURCE[0]}" ;;
  *) die "unknown command '$1' (up|down|status|url|ports|kill|stop|restart)" ;;
esac
