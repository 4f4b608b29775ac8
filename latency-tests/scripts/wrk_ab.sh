#!/usr/bin/env bash
# Interleaved wrk A/B of the hello workload, as used for vendor/glommio/PATCHES.md:
# for each round, every server in turn is started fresh on core 0, loaded by
# `wrk -t1 -c32` on core 1 for DURATION seconds, and stopped. Both run under
# `chrt -f 10` (root) so that other work on a shared machine does not decide the
# figure. Prints one line per run with the load average.
#
#   bash latency-tests/scripts/wrk_ab.sh ROUNDS DURATION SERVER...
#
# SERVER: `coreline` (CORELINE=path, default target/release/coreline), `plain` /
# `coop` (coreline with GLOMMIO_URING_SETUP set), `upstream` (UPSTREAM=path to a
# coreline built against crates.io glommio 0.9.0), or a baseline: axum, actix,
# floor (built by the suite under latency-tests/baselines/target/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=$1; dur=$2; shift 2
core=${CORELINE:-target/release/coreline}
base=latency-tests/baselines/target/release
lua=$(mktemp); trap 'rm -f "$lua"' EXIT
cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.body   = '{"foo":"hello world","bar":42}'
wrk.headers["Content-Type"] = "application/json"
LUA
for r in $(seq 1 "$rounds"); do
  for m in "$@"; do
    case $m in
      coreline) cmd=("$core" run latency-tests/configs/hello.toml); port=28888 ;;
      plain|coop) cmd=(env "GLOMMIO_URING_SETUP=$m" "$core" run latency-tests/configs/hello.toml); port=28888 ;;
      upstream) cmd=("${UPSTREAM:?set UPSTREAM to a coreline built with upstream glommio}" run latency-tests/configs/hello.toml); port=28888 ;;
      *) cmd=("$base/baseline-$m" --port 28898 --core 0); port=28898 ;;
    esac
    RUST_LOG=warn chrt -f 10 taskset -c 0 "${cmd[@]}" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -s -m 1 "127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    rps=$(chrt -f 10 taskset -c 1 wrk -t1 -c32 -d"${dur}s" -s "$lua" "http://127.0.0.1:$port/my_api" \
      | awk '/Requests\/sec/ {print $2}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "round=$r server=$m req/s=$rps load=$(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
