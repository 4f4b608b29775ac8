#!/usr/bin/env bash
# Instructions per call of a bench's routine, counted by valgrind's callgrind:
# deterministic, so two builds compare exactly where criterion's wall-clock
# figures on a noisy VM cannot (this VM's interleaved criterion pairs of one
# routine spread 0.8x-1.3x).
#
#   bash benches/instructions.sh BENCH_BINARY FILTER [SYMBOL] [PER_CALL]
#
# BENCH_BINARY  a criterion bench executable (`cargo bench --bench request_path
#               --no-run` prints its path)
# FILTER        criterion's filter, e.g. whole/hello_request
# SYMBOL        the function whose inclusive cost is divided by its call count
#               (default: request_path::whole_path::{{closure}}, the `serve`
#               closure that answers one buffer of requests)
# PER_CALL      requests per call (16 for whole/hello_pipelined_16; default 1)
#
# criterion runs FILTER in --profile-time mode (no analysis) for 2 s of
# valgrind time; start-up and criterion's own work fall outside SYMBOL.
set -euo pipefail
bin=$1
filter=$2
symbol=${3:-'request_path::whole_path::{{closure}}'}
per_call=${4:-1}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --bench "$filter" \
  --profile-time 2 >/dev/null 2>&1
# The "=> file:SYMBOL (Nx)" call lines give inclusive cost and calls.
callgrind_annotate --inclusive=yes "$out" 2>/dev/null | grep -F ":$symbol (" | grep -F '=>' |
  head -1 | sed 's/,//g; s/^ *\([0-9]*\) .*(\([0-9]*\)x).*/\1 \2/' |
  awk -v per="$per_call" -v f="$filter" \
    '{ printf "%s: %.0f instructions per request (%d calls)\n", f, $1 / $2 / per, $2 }'
