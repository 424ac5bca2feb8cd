#!/usr/bin/env bash
# vx11 benchmarks, one command: `bash bench/run.sh` (or `make bench`).
#
# Installs nginx-light and wrk from Debian if missing, builds the release binaries, then on
# loopback only, each step bounded in time:
#   proxy       the same upstream direct / behind nginx / behind vx11-gateway, alternating,
#               keep-alive, new connection per request, and one connection (latency)
#   sse         N streams through the gateway(s) to the operator backend, one broadcast timed
#   reload      100 kubelet-style swaps of the token dir under load, first accepted request
#   controller  the controller's own benchmark, when it has one (hook)
# and prints a Markdown table (also saved as table.md in the results directory).
#
# Settings (environment): BENCH_STEPS ("proxy sse reload controller"), BENCH_DURATION (s per
# wrk run, 10), BENCH_ROUNDS (3), BENCH_CONNECTIONS (32), BENCH_SSE_STREAMS (10000),
# BENCH_SSE_PER_GATEWAY (18000: fds per process are limited, see docs/BENCHMARKS.md),
# BENCH_RELOAD_SWAPS (100), BENCH_RESULTS (target/bench/<UTC time>), BENCH_PORT_BASE (18000).
# BENCH_QUICK=1 makes every step short (for trying the script, not for figures).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
STEPS=${BENCH_STEPS:-"proxy sse reload controller"}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
SSE_STREAMS=${BENCH_SSE_STREAMS:-10000}
SSE_PER_GATEWAY=${BENCH_SSE_PER_GATEWAY:-18000}
SWAPS=${BENCH_RELOAD_SWAPS:-100}
PORT=${BENCH_PORT_BASE:-18000}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  DURATION=2 ROUNDS=1 SSE_STREAMS=${BENCH_SSE_STREAMS:-500} SWAPS=${BENCH_RELOAD_SWAPS:-10}
fi
RESULTS=${BENCH_RESULTS:-$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
LOGS="$RESULTS/logs"
FIX="$RESULTS/fixtures"
mkdir -p "$LOGS" "$FIX"

UPSTREAM=127.0.0.1:$((PORT + 80))
GATEWAY=127.0.0.1:$((PORT + 0))
NGINX=127.0.0.1:$((PORT + 1))
GATEWAY_1W=127.0.0.1:$((PORT + 2)) # the same gateway with VX11_WORKERS=1
BACKEND=127.0.0.1:$((PORT + 11))
SSE_GATEWAY_PORT=$((PORT + 100))   # +100, +101, … one per SSE gateway process
RELOAD_GATEWAY=127.0.0.1:$((PORT + 200))
METRICS_PORT=$((PORT + 300))       # +300 … one per process

step() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

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
stop_nginx() { # nginx daemonizes: its master's pid is in its pid file
  [[ -f "$RESULTS/nginx.pid" ]] || return 0
  local master i
  master=$(cat "$RESULTS/nginx.pid")
  kill -QUIT "$master" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do [[ -e /proc/$master ]] && sleep 0.05 || break; done
  rm -f "$RESULTS/nginx.pid"
}
cleanup() {
  stop "${PIDS[@]}"
  stop_nginx
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -Hltn "sport = :${1##*:}" | grep -q .; }

wait_http() { # url [tries]
  local i
  for ((i = 0; i < ${2:-200}; i++)); do
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

cpu_ticks() { # pid...: user+system CPU so far, in clock ticks, summed
  local pid t=0 v
  for pid in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

nginx_pids() { local m; m=$(cat "$RESULTS/nginx.pid"); echo "$m" $(pgrep -P "$m" || true); }

NEXT_METRICS=$METRICS_PORT
start_gateway() { # name addr tokens_dir backend_url → sets GW_PID
  local name=$1 addr=$2 dir=$3 backend=$4
  port_free "$addr" || die "port ${addr##*:} is busy; set BENCH_PORT_BASE"
  VX11_GATEWAY_ADDR=$addr VX11_OPERATOR_BACKEND_URL=$backend VX11_TOKENS_DIR=$dir \
    VX11_METRICS_ADDR=127.0.0.1:$NEXT_METRICS RUST_LOG=${BENCH_GATEWAY_LOG:-info} \
    "$BIN/vx11-gateway" >"$LOGS/$name.log" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  NEXT_METRICS=$((NEXT_METRICS + 1))
  wait_http "http://$addr/ready"
}

run_wrk() { # out-json-file wrk-args...: runs wrk, keeps its JSON line
  local out=$1
  shift
  wrk --latency -s "$BENCH/wrk-report.lua" "$@" >"$out.txt" 2>&1 || true
  grep '^{' "$out.txt" | tail -1 >"$out" || die "wrk gave no figures: $(tail -3 "$out.txt")"
}

# --- install and build ------------------------------------------------------------------
step "tools"
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  [[ $(id -u) == 0 ]] || die "nginx and wrk are missing; install them: apt-get install -y nginx-light wrk"
  info "installing nginx-light and wrk from Debian"
  apt-get update -qq >"$LOGS/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >>"$LOGS/apt.log" 2>&1
  # The package starts a default nginx on :80 where there is an init system; not ours to keep.
  if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
fi
info "$(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -c1-40)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
info "open files per process: $(ulimit -n)"

step "build (release)"
(cd "$ROOT" && cargo build --release --locked -p vx11-gateway -p vx11-operator-backend -p vx11-bench 2>&1 |
  grep -E '^(error|warning: unused)|Finished' >&2) || die "cargo build failed"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

{
  echo "**Machine:** $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "**Run:** $(date -u +%Y-%m-%dT%H:%MZ), git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- gateway service tokenset bench || echo ' (+ local changes)'); $(nginx -v 2>&1 | sed 's/.*: //'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'); wrk runs of ${DURATION} s, ${ROUNDS} round(s), ${CONNS} connections."
} >"$RESULTS/machine.txt"

step "fixtures: 100 tokens (digests for vx11, plaintext map for nginx)"
"$BIN/vx11-bench" tokens --out "$FIX" --count 100
TOKEN=$(sed -n 50p "$FIX/tokens.txt")
info "$FIX/tokens/tokens.json, $FIX/nginx-tokens.map"

# --- proxy ------------------------------------------------------------------------------
if [[ " $STEPS " == *" proxy "* ]]; then
  step "proxy: start the upstream, nginx and the gateway"
  port_free "$UPSTREAM" && port_free "$NGINX" || die "ports busy; set BENCH_PORT_BASE"
  "$BIN/vx11-bench" upstream --addr "$UPSTREAM" --lifetime-secs 3600 >"$LOGS/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  PIDS+=("$UPSTREAM_PID")
  wait_http "http://$UPSTREAM/"
  mkdir -p "$RESULTS/nginx-tmp"
  sed -e "s|@DIR@|$RESULTS|g" -e "s|@UPSTREAM@|$UPSTREAM|g" -e "s|@LISTEN@|$NGINX|g" \
    "$BENCH/nginx.conf.in" >"$RESULTS/nginx.conf"
  cp "$FIX/nginx-tokens.map" "$RESULTS/nginx-tokens.map"
  nginx -c "$RESULTS/nginx.conf" -p "$RESULTS" || die "nginx did not start (see $RESULTS/nginx-error.log)"
  wait_http "http://$NGINX/health"
  start_gateway gateway "$GATEWAY" "$FIX/tokens" "http://$UPSTREAM"
  PROXY_GW_PID=$GW_PID
  VX11_WORKERS=1 start_gateway gateway-1w "$GATEWAY_1W" "$FIX/tokens" "http://$UPSTREAM"
  PROXY_GW1_PID=$GW_PID
  sleep 1
  GW_START=$(rss_mib "$PROXY_GW_PID") NGINX_START=$(rss_mib $(nginx_pids)) UP_START=$(rss_mib "$UPSTREAM_PID")
  info "RSS at start: gateway $GW_START MiB, nginx $NGINX_START MiB, upstream $UP_START MiB"

  target_addr() { case $1 in direct) echo "$UPSTREAM" ;; nginx) echo "$NGINX" ;; gateway) echo "$GATEWAY" ;; gateway-1w) echo "$GATEWAY_1W" ;; esac; }
  target_pids() { case $1 in direct) echo "$UPSTREAM_PID" ;; nginx) nginx_pids ;; gateway) echo "$PROXY_GW_PID" ;; gateway-1w) echo "$PROXY_GW1_PID" ;; esac; }
  TARGETS=(direct nginx gateway gateway-1w)
  for target in "${TARGETS[@]}"; do
    a=$(target_addr "$target")
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-VX11-Token: $TOKEN" "http://$a/operator/api/health")
    [[ $code == 200 ]] || die "$target answered $code to a valid token"
    if [[ $target != direct ]]; then
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-VX11-Token: vx11_not-in-the-set-000000000" "http://$a/operator/api/health")
      [[ $code == 401 ]] || die "$target answered $code to a wrong token"
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://$a/operator/api/health?token=$TOKEN")
      [[ $code == 200 ]] || die "$target answered $code to ?token="
    fi
    info "$target: 200 with a token of the set$([[ $target != direct ]] && echo ', 401 without, 200 with ?token=')"
    run_wrk "$RESULTS/warmup-$target.json" -t2 -c"$CONNS" -d1s -H "X-VX11-Token: $TOKEN" "http://$a/operator/api/health"
  done

  step "proxy: $ROUNDS round(s) × 3 cases × ${#TARGETS[@]} targets × ${DURATION} s, order rotating"
  : >"$RESULTS/proxy.jsonl"
  for ((round = 1; round <= ROUNDS; round++)); do
    for case in keepalive new-connection one-connection; do
      case $case in
        keepalive) args=(-t2 -c"$CONNS") ;;
        new-connection) args=(-t2 -c"$CONNS" -H "Connection: close") ;;
        one-connection) args=(-t1 -c1) ;;
      esac
      for ((k = 0; k < ${#TARGETS[@]}; k++)); do
        target=${TARGETS[$(((k + round + ${#case}) % ${#TARGETS[@]}))]}
        a=$(target_addr "$target")
        out="$RESULTS/wrk-$round-$case-$target.json"
        pids=$(target_pids "$target")
        before=$(cpu_ticks $pids) up_before=$(cpu_ticks "$UPSTREAM_PID")
        run_wrk "$out" "${args[@]}" -d"${DURATION}s" -H "X-VX11-Token: $TOKEN" "http://$a/operator/api/health"
        cpu=$(awk -v t="$(($(cpu_ticks $pids) - before))" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
        up_cpu=$(awk -v t="$(($(cpu_ticks "$UPSTREAM_PID") - up_before))" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
        printf '{"round":%d,"case":"%s","target":"%s","cpu_s":%s,"upstream_cpu_s":%s,"wrk":%s}\n' "$round" "$case" "$target" "$cpu" "$up_cpu" "$(cat "$out")" >>"$RESULTS/proxy.jsonl"
        info "$(printf 'round %d %-15s %-8s' "$round" "$case" "$target") $(awk -F'[:,]' '{for(i=1;i<NF;i++){if($i~/"requests"/)r=$(i+1);if($i~/"duration_us"/)d=$(i+1);if($i~/"p50_us"/)p5=$(i+1);if($i~/"p99_us"/)p9=$(i+1);if($i~/"errors_status"/)s=$(i+1)}} END {printf "%8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %d", r/(d/1e6), p5/1000, p9/1000, s}' "$out")"
      done
    done
  done
  sleep 2
  printf '{"gateway_start_mib":%s,"nginx_start_mib":%s,"upstream_start_mib":%s,"gateway_after_mib":%s,"nginx_after_mib":%s,"upstream_after_mib":%s}\n' \
    "$GW_START" "$NGINX_START" "$UP_START" "$(rss_mib "$PROXY_GW_PID")" "$(rss_mib $(nginx_pids))" "$(rss_mib "$UPSTREAM_PID")" >"$RESULTS/idle.json"
  stop "$PROXY_GW_PID" "$PROXY_GW1_PID" "$UPSTREAM_PID"
  stop_nginx
fi

# --- SSE at scale -------------------------------------------------------------------------
if [[ " $STEPS " == *" sse "* ]]; then
  GATEWAYS=$(((SSE_STREAMS + SSE_PER_GATEWAY - 1) / SSE_PER_GATEWAY))
  step "sse: $SSE_STREAMS streams through $GATEWAYS gateway process(es) to one operator backend"
  port_free "$BACKEND" || die "port ${BACKEND##*:} is busy"
  VX11_OPERATOR_BACKEND_ADDR=$BACKEND VX11_TOKENS_DIR=$FIX/tokens VX11_METRICS_ADDR=127.0.0.1:$NEXT_METRICS \
    RUST_LOG=info "$BIN/vx11-operator-backend" >"$LOGS/backend.log" 2>&1 &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  NEXT_METRICS=$((NEXT_METRICS + 1))
  wait_http "http://$BACKEND/ready"
  sse_args=()
  for ((g = 0; g < GATEWAYS; g++)); do
    start_gateway "sse-gateway-$g" "127.0.0.1:$((SSE_GATEWAY_PORT + g))" "$FIX/tokens" "http://$BACKEND"
    sse_args+=(--gateway "127.0.0.1:$((SSE_GATEWAY_PORT + g))" --gateway-pid "$GW_PID")
  done
  sleep 1
  "$BIN/vx11-bench" sse "${sse_args[@]}" --backend-pid "$BACKEND_PID" --streams "$SSE_STREAMS" \
    --tokens-file "$FIX/tokens.txt" --broadcasts 5 --out "$RESULTS/sse.json" 2>&1 | tee "$LOGS/sse.log" >&2
  stop "${PIDS[@]}"

  step "sse baseline: the same streams straight to a fresh operator backend (no gateway)"
  VX11_OPERATOR_BACKEND_ADDR=$BACKEND VX11_TOKENS_DIR=$FIX/tokens VX11_METRICS_ADDR=127.0.0.1:$NEXT_METRICS \
    RUST_LOG=info "$BIN/vx11-operator-backend" >"$LOGS/backend-direct.log" 2>&1 &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  wait_http "http://$BACKEND/ready"
  sleep 1
  "$BIN/vx11-bench" sse --gateway "$BACKEND" --backend-pid "$BACKEND_PID" --streams "$SSE_STREAMS" \
    --tokens-file "$FIX/tokens.txt" --broadcasts 5 --out "$RESULTS/sse-direct.json" 2>&1 | tee "$LOGS/sse-direct.log" >&2
  stop "${PIDS[@]}"
fi

# --- reload under load ----------------------------------------------------------------------
if [[ " $STEPS " == *" reload "* ]]; then
  step "reload: $SWAPS kubelet-style swaps while wrk loads the gateway"
  port_free "$UPSTREAM" || die "port ${UPSTREAM##*:} is busy"
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
if [[ " $STEPS " == *" controller "* ]]; then
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
