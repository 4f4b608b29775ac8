#!/usr/bin/env bash
# Instructions per hello request for the whole coreline server process
# (every thread), counted by valgrind's callgrind: the server runs under
# callgrind twice, answering N1 and then N2 requests over CONNS keep-alive
# connections (hello_client.py; default 1, one request in flight, so every
# request takes the same path through the reactor; with many connections the
# batching, hence the figure, depends on timing), and the figure is
# (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up, warm-up and shutdown cancel out.
#
# The figure also counts work proportional to wall time rather than to
# requests (the shard's timers), and how many requests share a reactor pass
# depends on timing, so it moves between runs of one binary: compare builds
# interleaved, several runs each.
#
#   [CONNS=1] bash latency-tests/callgrind/instructions.sh [coreline binary] [N1] [N2]
#
# Extra environment for the server (e.g. GLOMMIO_URING_SETUP=plain) passes
# through. Needs valgrind and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/coreline}
n1=${2:-2000}
n2=${3:-12000}
conns=${CONNS:-1}
# configs/hello.toml on ports of its own, so it can run beside the suite.
port=28896
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cfg="$dir/hello.toml"
sed -e "s/^base_port = .*/base_port = $port/" -e 's/^admin_port = .*/admin_port = 28897/' \
  latency-tests/configs/hello.toml >"$cfg"

run() {
  local n=$1 out="$dir/cg.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run "$cfg" \
    >"$dir/log.$n" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    curl -s -m 1 "127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  python3 latency-tests/callgrind/hello_client.py "$port" 200 "$conns"   # warm-up
  python3 latency-tests/callgrind/hello_client.py "$port" "$n" "$conns"
  kill -TERM "$pid"
  # valgrind runs one thread at a time and does not treat io_uring_enter as
  # blocking, so an idle shard asleep in it keeps the other threads (the one
  # that takes the signal among them) from running. Each request wakes it.
  for _ in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || break
    curl -s -m 1 "127.0.0.1:$port/health" >/dev/null 2>&1 || true
    sleep 0.1
  done
  wait "$pid" || true
  # "summary:" (or "totals:") line of the callgrind output: total Ir.
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

ir1=$(run "$n1")
ir2=$(run "$n2")
echo "Ir($n1 requests) = $ir1"
echo "Ir($n2 requests) = $ir2"
awk -v a="$ir1" -v b="$ir2" -v n1="$n1" -v n2="$n2" \
  'BEGIN { printf "instructions per hello request: %.0f\n", (b - a) / (n2 - n1) }'
