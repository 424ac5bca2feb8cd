#!/usr/bin/env bash
# vx11 benchmarks, one command: `bash bench/run.sh` (or `make bench`).
#
# Installs nginx-light, haproxy, wrk, nghttp2-client (h2load), strace and valgrind from Debian if
# missing, builds the release binaries, then on loopback only, each step bounded in time:
#   proxy       the same upstream direct and behind nginx, HAProxy and vx11-gateway, each
#               peer with W workers for every W of BENCH_WORKERS (nginx-Ww, haproxy-Ww,
#               gateway-Ww; direct once), wrk: keep-alive, new connection per request, and
#               one connection (latency); rounds alternate the order
#   cost        per peer and W, exactly BENCH_COST_REQUESTS requests with h2load, keep-alive
#               and new connection: CPU µs per request (the peer's processes, /proc), then the
#               same requests again under strace -c: system calls per request, top 3
#   instructions  per peer with one worker under valgrind's callgrind, exactly
#               BENCH_INSTR_REQUESTS requests, keep-alive and new connection: user-space
#               instructions per request (repeatable to about 1 %, where CPU time is not)
#   sse         N streams to one operator backend through the gateway, through nginx,
#               through HAProxy (BENCH_SSE_WORKERS workers each) and straight (baseline);
#               memory per stream and one broadcast timed
#   reload      100 kubelet-style swaps of the token dir under load, first accepted request
#   controller  the controller's own benchmark, when it has one (hook)
# and prints a Markdown table (also saved as table.md in the results directory).
#
# Settings (environment): BENCH_STEPS ("proxy cost instructions sse reload controller"),
# BENCH_WORKERS ("1 2"), BENCH_DURATION (s per wrk run, 5), BENCH_ROUNDS (3),
# BENCH_CONNECTIONS (32), BENCH_COST_REQUESTS (20000), BENCH_INSTR_REQUESTS (2000),
# BENCH_SSE_STREAMS (10000), BENCH_SSE_WORKERS (2),
# BENCH_SSE_PER_GATEWAY (18000: fds per process are limited, see docs/BENCHMARKS.md),
# BENCH_RELOAD_SWAPS (100), BENCH_RESULTS (target/bench/<UTC time>), BENCH_PORT_BASE (18000),
# BENCH_GATEWAY_LOG (info), BENCH_CONTROLLER_CMD, and a CPU per worker (auto) or not (off)
# in the proxy and cost steps: BENCH_NGINX_CPUS (worker_cpu_affinity auto) and
# BENCH_HAPROXY_CPUS (cpu-map), auto as their tuning guides advise; BENCH_GATEWAY_CPUS
# (VX11_WORKER_CPUS), auto too: its keep-alive connections follow wrk's threads to the
# worker of their CPU (docs/gateway.md). Each wrk run also records the CPU time the host
# took meanwhile (steal), which the table reports.
# BENCH_QUICK=1 makes every step short (for trying the script, not for figures).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
STEPS=${BENCH_STEPS:-"proxy cost instructions sse reload controller"}
WORKERS=${BENCH_WORKERS:-"1 2"}
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
CASES=${BENCH_CASES:-"keepalive new-connection one-connection"}
COST_REQUESTS=${BENCH_COST_REQUESTS:-20000}
INSTR_REQUESTS=${BENCH_INSTR_REQUESTS:-2000}
SSE_STREAMS=${BENCH_SSE_STREAMS:-10000}
SSE_WORKERS=${BENCH_SSE_WORKERS:-2}
SSE_PER_GATEWAY=${BENCH_SSE_PER_GATEWAY:-18000}
SWAPS=${BENCH_RELOAD_SWAPS:-100}
PORT=${BENCH_PORT_BASE:-18000}
GATEWAY_CPUS=${BENCH_GATEWAY_CPUS:-auto}
NGINX_CPUS=${BENCH_NGINX_CPUS:-auto}
HAPROXY_CPUS=${BENCH_HAPROXY_CPUS:-auto}
# Another build of the gateway, beside this one in proxy and cost (target gatewayB-Ww): to
# compare a change side by side in one run. Not judged against the goal.
GATEWAY_B=${BENCH_GATEWAY_B:-}
# A proxy-step wrk run during which the host took more than this share of the CPU time
# (steal) is run again, up to BENCH_STEAL_RETRIES more times; the least stolen is kept. The
# same rule for every peer: it keeps the host's bursts out of the ratios, not any peer's.
MAX_STEAL=${BENCH_MAX_STEAL:-2}
STEAL_RETRIES=${BENCH_STEAL_RETRIES:-2}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  DURATION=2 ROUNDS=1 SSE_STREAMS=${BENCH_SSE_STREAMS:-500} SWAPS=${BENCH_RELOAD_SWAPS:-10}
  COST_REQUESTS=${BENCH_COST_REQUESTS:-2000} INSTR_REQUESTS=${BENCH_INSTR_REQUESTS:-300}
fi
[[ -z $GATEWAY_B || -x $GATEWAY_B ]] || { echo "bench/run.sh: BENCH_GATEWAY_B is not an executable: $GATEWAY_B" >&2; exit 1; }
[[ $MAX_STEAL =~ ^[0-9]+([.][0-9]+)?$ && $STEAL_RETRIES =~ ^[0-9]+$ ]] ||
  { echo "bench/run.sh: BENCH_MAX_STEAL is a percentage (e.g. 2 or 0.5) and BENCH_STEAL_RETRIES a count, got '$MAX_STEAL' and '$STEAL_RETRIES'" >&2; exit 1; }
for case in $CASES; do
  [[ $case == keepalive || $case == new-connection || $case == one-connection ]] ||
    { echo "bench/run.sh: BENCH_CASES lists keepalive, new-connection and one-connection, got '$case'" >&2; exit 1; }
done
for cpus in "$GATEWAY_CPUS" "$NGINX_CPUS" "$HAPROXY_CPUS"; do
  [[ $cpus == auto || $cpus == off ]] || { echo "bench/run.sh: BENCH_GATEWAY_CPUS, BENCH_NGINX_CPUS and BENCH_HAPROXY_CPUS are auto or off, got '$cpus'" >&2; exit 1; }
done
for w in $WORKERS $SSE_WORKERS; do
  [[ $w =~ ^[1-9]$ ]] || { echo "bench/run.sh: workers must be 1…9, got '$w'" >&2; exit 1; }
done
RESULTS=${BENCH_RESULTS:-$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
LOGS="$RESULTS/logs"
FIX="$RESULTS/fixtures"
mkdir -p "$LOGS" "$FIX"

# Ports, all on 127.0.0.1, derived from BENCH_PORT_BASE (W is 1…9):
UPSTREAM=127.0.0.1:$((PORT + 80))
BACKEND=127.0.0.1:$((PORT + 11))
gateway_addr() { echo "127.0.0.1:$((PORT + 20 + $1))"; } # gateway-Ww: +21…+29
nginx_addr() { echo "127.0.0.1:$((PORT + 30 + $1))"; }   # nginx-Ww:   +31…+39
haproxy_addr() { echo "127.0.0.1:$((PORT + 40 + $1))"; } # haproxy-Ww: +41…+49
gateway_b_addr() { echo "127.0.0.1:$((PORT + 50 + $1))"; } # gatewayB-Ww: +51…+59
SSE_GATEWAY_PORT=$((PORT + 100)) # +100, +101, … one per SSE gateway process
SSE_NGINX=127.0.0.1:$((PORT + 150))
SSE_HAPROXY_PORT=$((PORT + 160)) # +160, +161, … one per SSE HAProxy process
RELOAD_GATEWAY=127.0.0.1:$((PORT + 200))
METRICS_PORT=$((PORT + 300)) # +300 … one per gateway / backend process

step() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf '    WARNING: %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }
has_step() { [[ " $STEPS " == *" $1 "* ]]; }

# --- what we start, we stop (by pid) ------------------------------------------------------
# Children are reaped by `wait` before they leave the list, so a pid here is always ours.
PIDS=()
stop() { # [-SIG] pid...: signal our children, reap them, forget them
  local sig=-TERM pid p keep=()
  if [[ ${1:-} == -* ]]; then sig=$1; shift; fi
  for pid; do kill "$sig" "$pid" 2>/dev/null || true; done
  for pid; do wait "$pid" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do [[ " $* " == *" $p "* ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
# nginx runs in the foreground (daemon off), our child like the other peers, in the same
# session and so in the same scheduling autogroup; each instance has its own directory with
# its pid file; stop_nginx asks the master to quit and waits (bounded) for it.
NGINX_DIRS=()
running() { # pid: alive and not a zombie waiting to be reaped
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}
stop_nginx() { # dir
  [[ -f "$1/nginx.pid" ]] || return 0
  local master i
  master=$(cat "$1/nginx.pid")
  kill -QUIT "$master" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do running "$master" && sleep 0.05 || break; done
  stop -KILL "$master" # reaps it (and forgets it) whether it quit or not
  rm -f "$1/nginx.pid"
}
cleanup() {
  local d
  stop "${PIDS[@]}"
  for d in "${NGINX_DIRS[@]}"; do stop_nginx "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -Hltn "sport = :${1##*:}" | grep -q .; }
need_port() { port_free "$1" || die "port ${1##*:} is busy; set BENCH_PORT_BASE"; }

# The command the peers start under (the instructions step: valgrind), and how long a start
# may take.
WRAP=()
WAIT_TRIES=200
wait_http() { # url [tries]
  local i
  for ((i = 0; i < ${2:-$WAIT_TRIES}; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  die "nothing answered $1 in time (logs in $LOGS)"
}

rss_mib() { # pid...: summed VmRSS in MiB
  local kib=0 pid v
  for pid in "$@"; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    kib=$((kib + ${v:-0}))
  done
  awk -v k="$kib" 'BEGIN { printf "%.2f", k / 1024 }'
}

cpu_ticks() { # pid...: user+system CPU so far (all threads of each), in clock ticks, summed
  local pid t=0 v
  for pid in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

nginx_pids() { # dir: the master and its workers
  local m
  m=$(cat "$1/nginx.pid")
  echo "$m" $(pgrep -P "$m" || true)
}

start_nginx() { # name addr upstream workers worker_connections → sets NGINX_DIR
  local name=$1 addr=$2 upstream=$3 workers=$4 conns=$5 dir=$RESULTS/$1
  need_port "$addr"
  mkdir -p "$dir/nginx-tmp"
  sed -e "s|@DIR@|$dir|g" -e "s|@UPSTREAM@|$upstream|g" -e "s|@LISTEN@|$addr|g" \
    -e "s|@WORKERS@|$workers|g" -e "s|@WORKER_CONNECTIONS@|$conns|g" -e "s|@NOFILE@|$NOFILE|g" \
    -e "s|@CPU_AFFINITY@|$([[ $NGINX_CPUS == auto ]] && echo 'worker_cpu_affinity auto;')|" \
    "$BENCH/nginx.conf.in" >"$dir/nginx.conf"
  cp "$FIX/nginx-tokens.map" "$dir/nginx-tokens.map"
  NGINX_DIRS+=("$dir")
  # Under a tool, one process that serves (no master forking workers the tool would not see).
  local single=()
  ((${#WRAP[@]} == 0)) || single=(-g 'master_process off;')
  "${WRAP[@]}" nginx "${single[@]}" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" -p "$dir" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  wait_http "http://$addr/health"
  NGINX_DIR=$dir
}

# HAProxy: one process, threads; in the foreground (-db), its access log on stdout.
HAPROXY_MAXCONN=0 # set once the open-files limit is known
start_haproxy() { # name addr upstream threads → sets HAPROXY_PID
  local name=$1 addr=$2 upstream=$3 threads=$4 dir=$RESULTS/$1
  need_port "$addr"
  mkdir -p "$dir"
  sed -e "s|@DIR@|$dir|g" -e "s|@UPSTREAM@|$upstream|g" -e "s|@LISTEN@|$addr|g" \
    -e "s|@WORKERS@|$threads|g" -e "s|@MAXCONN@|$HAPROXY_MAXCONN|g" \
    -e "s|@CPU_MAP@|$([[ $HAPROXY_CPUS == auto ]] && echo "cpu-map auto:1/1-$threads 0-$((threads - 1))")|" \
    "$BENCH/haproxy.cfg.in" >"$dir/haproxy.cfg"
  cp "$FIX/haproxy-tokens.lst" "$dir/haproxy-tokens.lst"
  haproxy -c -q -f "$dir/haproxy.cfg" >"$LOGS/$name-check.log" 2>&1 ||
    die "HAProxy rejects $dir/haproxy.cfg: $(tail -3 "$LOGS/$name-check.log")"
  "${WRAP[@]}" haproxy -db -f "$dir/haproxy.cfg" >"$LOGS/$name.log" 2>&1 &
  HAPROXY_PID=$!
  PIDS+=("$HAPROXY_PID")
  wait_http "http://$addr/health"
}

NEXT_METRICS=$METRICS_PORT
# The SSE step opens all its streams with one token, each on its own connection: the stream
# and connection caps (VX11_MAX_STREAMS, VX11_MAX_STREAMS_PER_TOKEN, VX11_MAX_CONNECTIONS:
# 10 000, 5 000 and 10 000 by default) are raised above that for the gateway and the backend,
# or they would refuse half the streams (429) and the broadcast's post (connection closed).
STREAM_CAPS=(VX11_MAX_STREAMS="$((SSE_STREAMS + 1000))" VX11_MAX_STREAMS_PER_TOKEN="$((SSE_STREAMS + 1000))"
  VX11_MAX_CONNECTIONS="$((SSE_STREAMS + 1000))")

start_gateway() { # name addr tokens_dir backend_url [workers] [worker_cpus] [binary] → sets GW_PID
  local name=$1 addr=$2 dir=$3 backend=$4 workers=${5:-} cpus=${6:-} binary=${7:-$BIN/vx11-gateway}
  need_port "$addr"
  local envs=(VX11_GATEWAY_ADDR="$addr" VX11_OPERATOR_BACKEND_URL="$backend" VX11_TOKENS_DIR="$dir"
    VX11_METRICS_ADDR="127.0.0.1:$NEXT_METRICS" RUST_LOG="${BENCH_GATEWAY_LOG:-info}"
    "${STREAM_CAPS[@]}")
  [[ -z $workers ]] || envs+=(VX11_WORKERS="$workers")
  [[ -z $cpus ]] || envs+=(VX11_WORKER_CPUS="$cpus")
  env "${envs[@]}" "${WRAP[@]}" "$binary" >"$LOGS/$name.log" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  NEXT_METRICS=$((NEXT_METRICS + 1))
  wait_http "http://$addr/ready"
}

start_backend() { # name → sets BACKEND_PID (a fresh operator backend on $BACKEND)
  need_port "$BACKEND"
  env VX11_OPERATOR_BACKEND_ADDR="$BACKEND" VX11_TOKENS_DIR="$FIX/tokens" VX11_METRICS_ADDR="127.0.0.1:$NEXT_METRICS" \
    RUST_LOG=info "${STREAM_CAPS[@]}" "$BIN/vx11-operator-backend" >"$LOGS/$1.log" 2>&1 &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  NEXT_METRICS=$((NEXT_METRICS + 1))
  wait_http "http://$BACKEND/ready"
}

cpu_stolen() { # "steal total" clock ticks of all CPUs so far (/proc/stat): time the host gave to others
  awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

stolen_pct() { # "steal total" before, after: the share of CPU time the host took meanwhile, in %
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%.1f", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

idle_entries() { # times any CPU went idle so far (cpuidle's usage counters; 0 without cpuidle)
  cat /sys/devices/system/cpu/cpu[0-9]*/cpuidle/state*/usage 2>/dev/null | awk '{ n += $1 } END { print n + 0 }'
}

run_wrk() { # out-json-file wrk-args...: runs wrk, keeps its JSON line
  local out=$1
  shift
  wrk --latency -s "$BENCH/wrk-report.lua" "$@" >"$out.txt" 2>&1 || true
  grep '^{' "$out.txt" | tail -1 >"$out" || die "wrk gave no figures: $(tail -3 "$out.txt")"
}

# --- install and build ------------------------------------------------------------------
step "tools"
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v strace >/dev/null || missing+=(strace)
if has_step instructions; then
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || missing+=(valgrind)
fi
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "missing: ${missing[*]}; install them: apt-get install -y ${missing[*]}"
  info "installing ${missing[*]} from Debian"
  apt-get update -qq >"$LOGS/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$LOGS/apt.log" 2>&1
  # The packages start a default nginx (on :80) and HAProxy where there is an init system;
  # not ours to keep.
  if command -v service >/dev/null; then
    service nginx stop >/dev/null 2>&1 || true
    service haproxy stop >/dev/null 2>&1 || true
  fi
fi
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*: //')
# awk reads the whole output (head would close the pipe early under pipefail).
HAPROXY_VERSION=$(haproxy -v | awk 'NR == 1 {print "haproxy/" $3}')
WRK_VERSION=$( (wrk -v 2>&1 || true) | awk 'NR == 1 {print $2}')
H2LOAD_VERSION=$(h2load --version | awk 'NR == 1 {print $2}')
STRACE_VERSION=$(strace -V | awk 'NR == 1 {print $NF}')
VALGRIND_VERSION=$(valgrind --version 2>/dev/null || echo "no valgrind")
info "$NGINX_VERSION, $HAPROXY_VERSION, wrk $WRK_VERSION, h2load $H2LOAD_VERSION, strace $STRACE_VERSION"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
# HAProxy refuses to start when its descriptors (2 per proxied connection, plus listeners,
# pollers and logs) exceed the limit (strict-limits is on by default).
HAPROXY_MAXCONN=$(((NOFILE - 500) / 2))
((HAPROXY_MAXCONN > 200)) || die "$NOFILE open files per process is too few for the benchmark"
info "open files per process: $NOFILE (HAProxy maxconn $HAPROXY_MAXCONN per process)"

step "build (release)"
(cd "$ROOT" && cargo build --release --locked -p vx11-gateway -p vx11-operator-backend -p vx11-bench 2>&1 |
  grep -E '^(error|warning: unused)|Finished' >&2) || die "cargo build failed"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

{
  echo "**Machine:** $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr); load average at start: $(cut -d' ' -f1-3 /proc/loadavg); open files per process: $NOFILE."
  echo "**Run:** $(date -u +%Y-%m-%dT%H:%MZ), git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- gateway service tokenset bench || echo ' (+ local changes)'); $NGINX_VERSION, $HAPROXY_VERSION, wrk $WRK_VERSION, h2load $H2LOAD_VERSION, strace $STRACE_VERSION, $VALGRIND_VERSION; steps: $STEPS; workers: $WORKERS; wrk runs of ${DURATION} s, ${ROUNDS} round(s), ${CONNS} connections; cost: $COST_REQUESTS requests per run; SSE: $SSE_STREAMS streams, $SSE_WORKERS workers per peer; a CPU per worker: gateway $GATEWAY_CPUS, nginx $NGINX_CPUS, HAProxy $HAPROXY_CPUS."
} >"$RESULTS/machine.txt"

step "fixtures: 100 tokens (digests for vx11, plaintext for nginx and HAProxy)"
"$BIN/vx11-bench" tokens --out "$FIX" --count 100
TOKEN=$(sed -n 50p "$FIX/tokens.txt")
info "$FIX/tokens/tokens.json, $FIX/nginx-tokens.map, $FIX/haproxy-tokens.lst"

# --- the peers of the proxy and cost steps ----------------------------------------------
declare -A T_ADDR T_WORKERS T_PID T_NGINX_DIR
TARGETS=()
target_pids() { # target: the pids whose CPU, memory and system calls are the target's
  if [[ -n ${T_NGINX_DIR[$1]:-} ]]; then nginx_pids "${T_NGINX_DIR[$1]}"; else echo "${T_PID[$1]}"; fi
}
json_workers() { echo "${T_WORKERS[$1]:-null}"; }

check_peer() { # target: the same answers as the gateway's, or stop here
  local t=$1 a=${T_ADDR[$1]} code resp
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-VX11-Token: $TOKEN" "http://$a/operator/api/health")
  [[ $code == 200 ]] || die "$t answered $code to a valid token"
  if [[ $t != direct ]]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$a/operator/api/health")
    [[ $code == 200 ]] || die "$t answered $code to a valid Bearer token"
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$a/operator/api/health?token=$TOKEN")
    [[ $code == 200 ]] || die "$t answered $code to ?token="
    resp=$(curl -s -D - -o "$LOGS/$t-401.json" -H "X-VX11-Token: vx11_not-in-the-set-000000000" "http://$a/operator/api/health")
    [[ $resp == "HTTP/1.1 401"* ]] || die "$t answered '${resp%%$'\r'*}' to a wrong token"
    grep -qi '^www-authenticate: Bearer realm="vx11"' <<<"$resp" || die "$t's 401 has no WWW-Authenticate: Bearer realm=\"vx11\""
    grep -q '"error":"invalid_token"' "$LOGS/$t-401.json" || die "$t's 401 body is not the invalid_token JSON"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-VX11-Token: $TOKEN" "http://$a/elsewhere")
    [[ $code == 404 ]] || die "$t answered $code outside /operator/api"
  fi
  # h2load's new-connection mode reconnects only when the response says `connection: close`.
  resp=$(curl -s -D - -o /dev/null -H "X-VX11-Token: $TOKEN" -H "Connection: close" "http://$a/operator/api/health")
  grep -qi '^connection: *close' <<<"$resp" ||
    warn "$t does not answer 'Connection: close' with 'connection: close'; its h2load new-connection run will fail"
  info "$t: 200 with a token of the set$([[ $t != direct ]] && echo ' (header, Bearer, ?token=), 401 + WWW-Authenticate without, 404 elsewhere')"
}

if has_step proxy || has_step cost; then
  step "peers: the upstream; nginx, HAProxy and the gateway with $WORKERS worker(s)"
  need_port "$UPSTREAM"
  "$BIN/vx11-bench" upstream --addr "$UPSTREAM" --lifetime-secs 7200 >"$LOGS/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  PIDS+=("$UPSTREAM_PID")
  wait_http "http://$UPSTREAM/"
  TARGETS=(direct)
  T_ADDR[direct]=$UPSTREAM T_PID[direct]=$UPSTREAM_PID
  for w in $WORKERS; do
    start_nginx "nginx-${w}w" "$(nginx_addr "$w")" "$UPSTREAM" "$w" 8192
    T_ADDR[nginx-${w}w]=$(nginx_addr "$w") T_NGINX_DIR[nginx-${w}w]=$NGINX_DIR
    start_haproxy "haproxy-${w}w" "$(haproxy_addr "$w")" "$UPSTREAM" "$w"
    T_ADDR[haproxy-${w}w]=$(haproxy_addr "$w") T_PID[haproxy-${w}w]=$HAPROXY_PID
    start_gateway "gateway-${w}w" "$(gateway_addr "$w")" "$FIX/tokens" "http://$UPSTREAM" "$w" "$GATEWAY_CPUS"
    T_ADDR[gateway-${w}w]=$(gateway_addr "$w") T_PID[gateway-${w}w]=$GW_PID
    peers=(nginx haproxy gateway)
    if [[ -n $GATEWAY_B ]]; then
      start_gateway "gatewayB-${w}w" "$(gateway_b_addr "$w")" "$FIX/tokens" "http://$UPSTREAM" "$w" "$GATEWAY_CPUS" "$GATEWAY_B"
      T_ADDR[gatewayB-${w}w]=$(gateway_b_addr "$w") T_PID[gatewayB-${w}w]=$GW_PID
      peers+=(gatewayB)
    fi
    for p in "${peers[@]}"; do
      TARGETS+=("$p-${w}w")
      T_WORKERS[$p-${w}w]=$w
    done
  done
  sleep 1
  declare -A RSS_START
  for t in "${TARGETS[@]}"; do
    RSS_START[$t]=$(rss_mib $(target_pids "$t"))
    check_peer "$t"
    run_wrk "$RESULTS/warmup-$t.json" -t2 -c"$CONNS" -d1s -H "X-VX11-Token: $TOKEN" "http://${T_ADDR[$t]}/operator/api/health"
  done
  info "RSS at start (MiB): $(for t in "${TARGETS[@]}"; do printf '%s %s  ' "$t" "${RSS_START[$t]}"; done)"
fi

# --- proxy ------------------------------------------------------------------------------
if has_step proxy; then
  step "proxy: $ROUNDS round(s) × $(wc -w <<<"$CASES") case(s) × ${#TARGETS[@]} targets × ${DURATION} s, order rotating"
  : >"$RESULTS/proxy.jsonl"
  for ((round = 1; round <= ROUNDS; round++)); do
    for case in $CASES; do
      case $case in
        keepalive) args=(-t2 -c"$CONNS") ;;
        new-connection) args=(-t2 -c"$CONNS" -H "Connection: close") ;;
        one-connection) args=(-t1 -c1) ;;
      esac
      for ((k = 0; k < ${#TARGETS[@]}; k++)); do
        target=${TARGETS[$(((k + round + ${#case}) % ${#TARGETS[@]}))]}
        a=${T_ADDR[$target]}
        out="$RESULTS/wrk-$round-$case-$target.json"
        pids=$(target_pids "$target")
        best=
        for ((attempt = 1; attempt <= 1 + STEAL_RETRIES; attempt++)); do
          before=$(cpu_ticks $pids) up_before=$(cpu_ticks "$UPSTREAM_PID") stolen_before=$(cpu_stolen) idle_before=$(idle_entries)
          run_wrk "$out.$attempt" "${args[@]}" -d"${DURATION}s" -H "X-VX11-Token: $TOKEN" "http://$a/operator/api/health"
          stolen=$(stolen_pct "$stolen_before" "$(cpu_stolen)") idled=$(($(idle_entries) - idle_before))
          cpu=$(awk -v t="$(($(cpu_ticks $pids) - before))" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
          up_cpu=$(awk -v t="$(($(cpu_ticks "$UPSTREAM_PID") - up_before))" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
          if [[ -z $best ]] || awk -v s="$stolen" -v b="${best%% *}" 'BEGIN { exit !(s < b) }'; then
            best="$stolen $cpu $up_cpu $idled" && cp "$out.$attempt" "$out"
          fi
          awk -v s="$stolen" -v m="$MAX_STEAL" 'BEGIN { exit !(s <= m) }' && break
          ((attempt > STEAL_RETRIES)) || info "$(printf 'round %d %-15s %-11s' "$round" "$case" "$target") the host took $stolen % of the CPU time: again"
        done
        read -r stolen cpu up_cpu idled <<<"$best"
        printf '{"round":%d,"case":"%s","target":"%s","workers":%s,"cpu_s":%s,"upstream_cpu_s":%s,"stolen_pct":%s,"attempts":%d,"cpu_idle_entries":%d,"wrk":%s}\n' \
          "$round" "$case" "$target" "$(json_workers "$target")" "$cpu" "$up_cpu" "$stolen" "$((attempt > 1 + STEAL_RETRIES ? attempt - 1 : attempt))" "$idled" "$(cat "$out")" >>"$RESULTS/proxy.jsonl"
        info "$(printf 'round %d %-15s %-11s' "$round" "$case" "$target") $(awk -F'[:,]' '{for(i=1;i<NF;i++){if($i~/"requests"/)r=$(i+1);if($i~/"duration_us"/)d=$(i+1);if($i~/"p50_us"/)p5=$(i+1);if($i~/"p99_us"/)p9=$(i+1);if($i~/"errors_status"/)s=$(i+1)}} END {printf "%8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %d", r/(d/1e6), p5/1000, p9/1000, s}' "$out")  stolen $stolen %"
      done
    done
  done
fi

# --- cost: a fixed number of requests, CPU time and system calls ---------------------------
h2load_2xx() { awk '/^status codes:/ {print $3 + 0; found = 1} END {if (!found) print 0}' "$1"; }

wait_traced() { # strace_pid pid...: until every thread of every pid is traced (bounded)
  local tracer=$1 i pid task all
  shift
  for ((i = 0; i < 200; i++)); do
    all=1
    for pid; do
      for task in /proc/"$pid"/task/*; do
        [[ $(awk '/^TracerPid:/ {print $2}' "$task/status" 2>/dev/null) == "$tracer" ]] || all=0
      done
    done
    ((all)) && return 0
    kill -0 "$tracer" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

cost_run() { # target mode: one line of cost.jsonl
  local t=$1 mode=$2 a=${T_ADDR[$1]} out="$RESULTS/cost/$1-$2" pids before ticks ok_timed ok_traced
  local hargs=(--h1 -n "$COST_REQUESTS" -c "$CONNS" -t 1 -H "x-vx11-token: $TOKEN")
  [[ $mode == keepalive ]] || hargs+=(-H "connection: close")
  local url="http://$a/operator/api/health"
  pids=$(target_pids "$t")
  # (a) CPU time of the peer's processes over exactly N requests.
  before=$(cpu_ticks $pids)
  timeout 300 h2load "${hargs[@]}" "$url" >"$out-timed.txt" 2>&1 || true
  ticks=$(($(cpu_ticks $pids) - before))
  ok_timed=$(h2load_2xx "$out-timed.txt")
  # (b) the same N requests under strace -c, attached to every process (with -f: every
  # thread) before and detached after.
  local sargs=() p spid syscalls=null top="[]"
  for p in $pids; do sargs+=(-p "$p"); done
  strace -c -f -q -o "$out-strace.txt" "${sargs[@]}" 2>"$out-strace.err" &
  spid=$!
  PIDS+=("$spid")
  if wait_traced "$spid" $pids; then
    timeout 600 h2load "${hargs[@]}" "$url" >"$out-traced.txt" 2>&1 || true
    stop -INT "$spid" # strace detaches and writes its summary
    ok_traced=$(h2load_2xx "$out-traced.txt")
    # Rows between the two dashed lines: calls in column 4, the name last.
    awk '/^-+ / {d++; next} d == 1 && NF >= 5 {print $4, $NF}' "$out-strace.txt" | sort -k1,1nr >"$out-calls.txt" || true
    if [[ -s "$out-calls.txt" ]]; then
      syscalls=$(awk -v n="$COST_REQUESTS" '{s += $1} END {printf "%.3f", s / n}' "$out-calls.txt")
      top="[$(head -3 "$out-calls.txt" | awk '{printf "%s[\"%s\",%d]", (NR > 1 ? "," : ""), $2, $1}')]"
    fi
  else
    stop "$spid"
    ok_traced=0
    warn "strace could not attach to every thread of $t: $(tail -2 "$out-strace.err")"
  fi
  local ok=$((ok_timed < ok_traced ? ok_timed : ok_traced))
  local cpu_us
  cpu_us=$(awk -v t="$ticks" -v hz="$HZ" -v n="$COST_REQUESTS" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  printf '{"peer":"%s","workers":%s,"mode":"%s","requests":%d,"ok":%d,"ok_timed":%d,"ok_traced":%d,"cpu_us_per_request":%s,"syscalls_per_request":%s,"top":%s}\n' \
    "${t%%-*}" "$(json_workers "$t")" "$mode" "$COST_REQUESTS" "$ok" "$ok_timed" "$ok_traced" "$cpu_us" "$syscalls" "$top" >>"$RESULTS/cost.jsonl"
  info "$(printf '%-11s %-15s' "$t" "$mode") 2xx $ok_timed + $ok_traced of 2 × $COST_REQUESTS, CPU $cpu_us µs/request, $syscalls system calls/request, top $top"
  ((ok == COST_REQUESTS)) || warn "$t $mode: not every request answered 2xx; the row is marked failed"
}

if has_step cost; then
  step "cost: ${#TARGETS[@]} targets × 2 modes × $COST_REQUESTS requests, timed and then traced"
  mkdir -p "$RESULTS/cost"
  : >"$RESULTS/cost.jsonl"
  for mode in keepalive new-connection; do
    for ((k = 0; k < ${#TARGETS[@]}; k++)); do
      cost_run "${TARGETS[$(((k + ${#mode}) % ${#TARGETS[@]}))]}" "$mode"
    done
  done
fi

if has_step proxy || has_step cost; then
  sleep 2
  {
    printf '{'
    sep=
    for t in "${TARGETS[@]}"; do
      printf '%s"%s":{"start_mib":%s,"after_mib":%s}' "$sep" "$t" "${RSS_START[$t]}" "$(rss_mib $(target_pids "$t"))"
      sep=,
    done
    printf '}\n'
  } >"$RESULTS/idle.json"
  stop "${PIDS[@]}"
  for d in "${NGINX_DIRS[@]}"; do stop_nginx "$d"; done
fi

# --- instructions: user-space instructions per request, under callgrind ---------------------
# CPU time per request moves by 10-20 % from run to run on a shared VM; instructions counted
# by valgrind's callgrind repeat to about 1 %. Each peer runs with one worker under
# callgrind (nginx as one process, master_process off); after a warm-up its counters are
# zeroed, exactly INSTR_REQUESTS requests go through, and the counters are dumped:
# keep-alive, then a new connection per request. User space only: the kernel's share (most
# of every peer's CPU here) is in the system calls of `cost`. Under valgrind a program sees
# no AVX-512 and no SHA extensions, so library code takes its generic paths (memset and
# memcpy count a byte per instruction, the gateway's SHA-256 of the token runs in software).
instr_peer() { # target pid: one line of instructions.jsonl per mode
  local t=$1 pid=$2 a=${T_ADDR[$1]} mode out dump n ok
  for mode in keepalive new-connection; do
    local hargs=(--h1 -c "$CONNS" -t 1 -H "x-vx11-token: $TOKEN")
    [[ $mode == keepalive ]] || hargs+=(-H "connection: close")
    out="$RESULTS/instructions/$t-$mode"
    timeout 300 h2load "${hargs[@]}" -n 300 "http://$a/operator/api/health" >"$out-warmup.txt" 2>&1 || true
    callgrind_control -z "$pid" >"$out-control.txt" 2>&1 || die "callgrind_control could not reach $t (pid $pid): $(tail -2 "$out-control.txt")"
    timeout 600 h2load "${hargs[@]}" -n "$INSTR_REQUESTS" "http://$a/operator/api/health" >"$out-h2load.txt" 2>&1 || true
    callgrind_control -d "$pid" >>"$out-control.txt" 2>&1 || die "callgrind_control could not reach $t (pid $pid): $(tail -2 "$out-control.txt")"
    ok=$(h2load_2xx "$out-h2load.txt")
    # Dumps are numbered in order: the last one is this mode's.
    dump=$(ls -1 "$RESULTS/instructions/$t.callgrind.$pid".* 2>/dev/null | sort -V | tail -1)
    n=$(awk '/^summary:/ {print $2}' "$dump" 2>/dev/null)
    [[ -n $n ]] || die "no callgrind dump for $t $mode in $RESULTS/instructions"
    printf '{"peer":"%s","workers":1,"mode":"%s","requests":%d,"ok":%d,"instructions":%s,"instructions_per_request":%s}\n' \
      "${t%%-*}" "$mode" "$INSTR_REQUESTS" "$ok" "$n" "$(awk -v n="$n" -v r="$INSTR_REQUESTS" 'BEGIN { printf "%.0f", n / r }')" >>"$RESULTS/instructions.jsonl"
    info "$(printf '%-11s %-15s' "$t" "$mode") 2xx $ok of $INSTR_REQUESTS, $(awk -v n="$n" -v r="$INSTR_REQUESTS" 'BEGIN { printf "%.0f", n / r }') instructions/request"
    ((ok == INSTR_REQUESTS)) || warn "$t $mode: not every request answered 2xx; the row is marked failed"
  done
}

if has_step instructions; then
  step "instructions: nginx, HAProxy and the gateway with one worker under callgrind, $INSTR_REQUESTS requests per mode"
  mkdir -p "$RESULTS/instructions"
  : >"$RESULTS/instructions.jsonl"
  need_port "$UPSTREAM"
  "$BIN/vx11-bench" upstream --addr "$UPSTREAM" --lifetime-secs 7200 >"$LOGS/upstream-instructions.log" 2>&1 &
  UPSTREAM_PID=$!
  PIDS+=("$UPSTREAM_PID")
  wait_http "http://$UPSTREAM/"
  WAIT_TRIES=1200 # a program under valgrind starts tens of times slower
  for peer in nginx haproxy gateway; do
    t=$peer-1w
    WRAP=(valgrind --tool=callgrind --callgrind-out-file="$RESULTS/instructions/$t.callgrind.%p")
    case $peer in
      nginx)
        start_nginx "$t-callgrind" "$(nginx_addr 1)" "$UPSTREAM" 1 8192
        T_ADDR[$t]=$(nginx_addr 1) pid=$(cat "$NGINX_DIR/nginx.pid")
        ;;
      haproxy)
        start_haproxy "$t-callgrind" "$(haproxy_addr 1)" "$UPSTREAM" 1
        T_ADDR[$t]=$(haproxy_addr 1) pid=$HAPROXY_PID
        ;;
      gateway)
        start_gateway "$t-callgrind" "$(gateway_addr 1)" "$FIX/tokens" "http://$UPSTREAM" 1
        T_ADDR[$t]=$(gateway_addr 1) pid=$GW_PID
        ;;
    esac
    WRAP=()
    instr_peer "$t" "$pid"
    if [[ $peer == nginx ]]; then stop_nginx "$NGINX_DIR"; else stop "$pid"; fi
  done
  WAIT_TRIES=200
  stop "${PIDS[@]}"
fi

# --- SSE at scale, through each peer --------------------------------------------------------
sse_measure() { # peer workers|- out-name vx11-bench-sse-args...
  local peer=$1 workers=$2 name=$3
  shift 3
  [[ $workers == - ]] || set -- "$@" --workers "$workers"
  sleep 1
  "$BIN/vx11-bench" sse "$@" --peer "$peer" --backend-pid "$BACKEND_PID" \
    --streams "$SSE_STREAMS" --tokens-file "$FIX/tokens.txt" --broadcasts 5 \
    --out "$RESULTS/$name.json" 2>&1 | tee "$LOGS/$name.log" >&2
}

if has_step sse; then
  GATEWAYS=$(((SSE_STREAMS + SSE_PER_GATEWAY - 1) / SSE_PER_GATEWAY))
  step "sse: $SSE_STREAMS streams through $GATEWAYS gateway process(es) with $SSE_WORKERS workers to one operator backend"
  start_backend backend-gateway
  sse_args=()
  for ((g = 0; g < GATEWAYS; g++)); do
    start_gateway "sse-gateway-$g" "127.0.0.1:$((SSE_GATEWAY_PORT + g))" "$FIX/tokens" "http://$BACKEND" "$SSE_WORKERS"
    sse_args+=(--gateway "127.0.0.1:$((SSE_GATEWAY_PORT + g))" --gateway-pid "$GW_PID")
  done
  sse_measure gateway "$((GATEWAYS * SSE_WORKERS))" sse "${sse_args[@]}"
  stop "${PIDS[@]}"

  # nginx: 2 connections per stream (client and backend), per worker process.
  step "sse: the same streams through nginx ($SSE_WORKERS workers) to a fresh operator backend"
  ((SSE_STREAMS * 2 <= SSE_WORKERS * (NOFILE - 100))) ||
    warn "$SSE_WORKERS nginx workers hold at most $((SSE_WORKERS * (NOFILE - 100) / 2)) streams with $NOFILE open files each"
  start_backend backend-nginx
  start_nginx nginx-sse "$SSE_NGINX" "$BACKEND" "$SSE_WORKERS" "$((NOFILE - 100))"
  sse_args=(--gateway "$SSE_NGINX")
  for p in $(nginx_pids "$NGINX_DIR"); do sse_args+=(--gateway-pid "$p"); done
  sse_measure nginx "$SSE_WORKERS" sse-nginx "${sse_args[@]}"
  stop "${PIDS[@]}"
  stop_nginx "$NGINX_DIR"

  # HAProxy: one process holds 2 descriptors per stream, all threads together; when the
  # limit is too low for all streams, several processes share the workers (threads).
  HAPROXIES=$(((SSE_STREAMS + HAPROXY_MAXCONN - 101) / (HAPROXY_MAXCONN - 100)))
  HA_THREADS=$((SSE_WORKERS / HAPROXIES > 0 ? SSE_WORKERS / HAPROXIES : 1))
  step "sse: the same streams through $HAPROXIES HAProxy process(es) × $HA_THREADS thread(s) to a fresh operator backend"
  ((HAPROXIES * HA_THREADS == SSE_WORKERS)) ||
    warn "HAProxy runs $((HAPROXIES * HA_THREADS)) threads in all, not $SSE_WORKERS ($NOFILE open files per process)"
  start_backend backend-haproxy
  sse_args=()
  for ((g = 0; g < HAPROXIES; g++)); do
    start_haproxy "haproxy-sse-$g" "127.0.0.1:$((SSE_HAPROXY_PORT + g))" "$BACKEND" "$HA_THREADS"
    sse_args+=(--gateway "127.0.0.1:$((SSE_HAPROXY_PORT + g))" --gateway-pid "$HAPROXY_PID")
  done
  sse_measure haproxy "$((HAPROXIES * HA_THREADS))" sse-haproxy "${sse_args[@]}"
  stop "${PIDS[@]}"

  step "sse baseline: the same streams straight to a fresh operator backend (no proxy)"
  start_backend backend-direct
  sse_measure direct - sse-direct --gateway "$BACKEND"
  stop "${PIDS[@]}"
fi

# --- reload under load ----------------------------------------------------------------------
if has_step reload; then
  step "reload: $SWAPS kubelet-style swaps while wrk loads the gateway"
  need_port "$UPSTREAM"
  "$BIN/vx11-bench" upstream --addr "$UPSTREAM" --lifetime-secs 1800 >"$LOGS/reload-upstream.log" 2>&1 &
  PIDS+=("$!")
  wait_http "http://$UPSTREAM/"
  cp -a "$FIX/tokens" "$FIX/reload-tokens"
  start_gateway reload-gateway "$RELOAD_GATEWAY" "$FIX/reload-tokens" "http://$UPSTREAM"
  wrk --latency -s "$BENCH/wrk-report.lua" -t1 -c16 -d600s -H "X-VX11-Token: $TOKEN" \
    "http://$RELOAD_GATEWAY/operator/api/health" >"$RESULTS/reload-load.txt" 2>&1 &
  WRK_PID=$!
  PIDS+=("$WRK_PID")
  sleep 1
  "$BIN/vx11-bench" reload --dir "$FIX/reload-tokens" --gateway "$RELOAD_GATEWAY" --swaps "$SWAPS" \
    --out "$RESULTS/reload.json" 2>&1 | tee "$LOGS/reload.log" >&2
  stop -INT "$WRK_PID" # wrk prints its figures on SIGINT
  grep '^{' "$RESULTS/reload-load.txt" | tail -1 >"$RESULTS/reload-load.json" || true
  stop "${PIDS[@]}"
fi

# --- controller ---------------------------------------------------------------------------
if has_step controller; then
  # The controller's own measurements (controller/tests/control_plane/bench.rs, on a local
  # etcd + kube-apiserver): spec change → service Secret, 1 000 sets from a cold start, RSS.
  # Its `BENCH …` lines go into the table. Set BENCH_CONTROLLER_CMD to run something else.
  step "controller: the controller's benchmark on the local control plane (bounded: 20 min)"
  # One test at a time, so the measurements do not share the CPU; the idle check (6 min by
  # default) is shortened to 30 s.
  CONTROLLER_CMD=${BENCH_CONTROLLER_CMD:-"cargo build --release --locked -p vx11-controller && VX11_IDLE_SECS=30 VX11_CONTROLLER_BIN=$BIN/vx11-controller cargo test --locked -p vx11-controller --test control_plane bench -- --ignored --nocapture --test-threads=1"}
  if [[ -f "$ROOT/controller/tests/control_plane/bench.rs" || -n ${BENCH_CONTROLLER_CMD:-} ]]; then
    info "$CONTROLLER_CMD"
    if (cd "$ROOT" && timeout 1200 bash -c "$CONTROLLER_CMD") >"$LOGS/controller.log" 2>&1; then
      grep -o 'BENCH .*' "$LOGS/controller.log" | sed 's/^BENCH /- /' >"$RESULTS/controller.txt" || true
      [[ -s "$RESULTS/controller.txt" ]] || echo "(the controller benchmark printed no BENCH lines; see $LOGS/controller.log)" >"$RESULTS/controller.txt"
    else
      echo "(the controller benchmark failed or timed out; see $LOGS/controller.log)" >"$RESULTS/controller.txt"
    fi
    sed 's/^/    /' "$RESULTS/controller.txt" >&2
  else
    echo "(hook: no controller benchmark found — set BENCH_CONTROLLER_CMD)" >"$RESULTS/controller.txt"
  fi
fi

step "results ($RESULTS)"
"$BIN/vx11-bench" table --results "$RESULTS"
