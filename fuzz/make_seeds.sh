#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets into fuzz/seeds/corpus/<target>/
# (run from anywhere; needs curl and a release build of coreline, which it
# makes). The committed corpora were made by this script and then minimised
# with `cargo fuzz cmin` after the long runs (README: "Fuzzing and soak").
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
out=seeds/corpus
rm -rf "$out"
mkdir -p "$out"/{http_codec,json_schema,expr,config,checkpoint}

# http_codec: byte 0 = limits pick (0: defaults), byte 1 = read sizes (1: 2-byte reads).
n=0
http() { printf '\x00\x01'"$1" > "$out/http_codec/seed-$n"; n=$((n + 1)); }
http 'GET /health HTTP/1.1\r\nHost: a\r\n\r\n'
http 'POST /my_api HTTP/1.1\r\nHost: a\r\nContent-Length: 27\r\n\r\n{"foo":"hello world","bar":4}GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n'
http 'POST /my_api HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{"foo\r\n3\r\n":1\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'
http 'POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc'
http 'GET http://host/a/b?c HTTP/1.1\r\nHost: host\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n'
http 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'
http '\r\n\r\nPUT /p HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n'

# json_schema: byte 0 = which fields (0xff: all eight).
n=0
json() { printf '%b' "$1$2" > "$out/json_schema/seed-$n"; n=$((n + 1)); }
json '\xff' '{"s":"x","i":-3,"f":2.5,"b":true,"ns":null,"ni":9223372036854775807,"nf":1e300,"nb":false}'
json '\x0f' '{"b":false,"f":7,"i":0,"s":"caf\\u00e9 \\"q\\"","extra":[1,{"a":[null]}]}'
json '\x03' ' {"s":"", "i":-0, "s2":"dup"} '
json '\x02' '{"i":18446744073709551615}'
json '\x00' ''
json '\x01' '[1,2]'

# expr: 4 bytes of row seed, then SQL text.
n=0
expr() { { printf '\x01\x23\x45\x67'; printf '%s' "$1"; } > "$out/expr/seed-$n"; n=$((n + 1)); }
expr 'length(s) + i * 2'
expr "CASE WHEN b AND nb IS NULL THEN upper(s) ELSE concat(ns, '-', lower(s)) END"
expr "s LIKE 'h%_' OR ns NOT LIKE '%\\%%' ESCAPE '\\'"
expr 'CAST(f AS BIGINT) / ni % 3 - abs(i)'
expr "coalesce(nf, f, 0.5) >= round(f * 1.5e3) AND NOT (i BETWEEN -1 AND 10)"
expr "substring(s, 2, 3) || CAST(i AS VARCHAR) IN ('a', 'b', s)"
expr "trim(s) = '' OR TRY_CAST(s AS DOUBLE) > pow(2, 3) OR CAST('true' AS BOOLEAN)"
expr 'i + 9223372036854775807'
expr 'greatest(i, ni, 3) <=> least(f, nf) OR (if(b, sqrt(f), ln(nf)) IS NOT NULL AND i::double > 1)'
expr "mod(ni, 0) IS NULL AND floor(f) = ceil(f) AND rtrim(ltrim(s, 'x')) <> nvl(ns, 'y')"

# config: the repository's example configurations.
for f in "$root"/configs/*.toml "$root"/latency-tests/configs/*.toml seeds/checkpoint.toml; do
  [ -f "$f" ] && cp "$f" "$out/config/$(basename "$f")"
done

# checkpoint: real epochs written by coreline: MANIFEST, NUL, shard file.
cargo build --release --manifest-path "$root/Cargo.toml" --bin coreline >/dev/null
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
sed "s|CHECKPOINT_DIR|$tmp/ckpt|" seeds/checkpoint.toml > "$tmp/c.toml"
"$root/target/release/coreline" run "$tmp/c.toml" > "$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf localhost:37290/health >/dev/null && break; sleep 0.1; done
post() { curl -sf -H 'X-Coreline-Admin: seeds' -d "$2" "localhost:$1" >/dev/null; }
checkpoint() { curl -sf -X POST -H 'X-Coreline-Admin: seeds' localhost:37290/checkpoint >/dev/null; }
for i in 1 2 3 4 5 6; do
  post 37200/events "{\"user\":\"u$i\",\"amount\":$((i * 7 - 20))}"
  post 37201/readings "{\"sensor\":\"s$i\",\"temp\":$((i * 5)).5}"
  post 37200/ids "{\"id\":$((i * 1000 - 3000)),\"v\":-$i.25}"
done
checkpoint                                   # full
post 37201/events '{"user":"u1","amount":1000}'
post 37200/readings '{"sensor":"s6","temp":-3.0}'
checkpoint                                   # delta: changed keys only
checkpoint                                   # delta: nothing changed
kill "$pid"; wait "$pid" || true
for dir in "$tmp"/ckpt/epoch-*; do
  e=${dir##*epoch-}
  for shard in "$dir"/shard-*.arrow; do
    s=$(basename "$shard" .arrow)
    { cat "$dir/MANIFEST"; printf '\0'; cat "$shard"; } > "$out/checkpoint/epoch-$e-$s"
  done
done
ls "$out"/* | head -100 >/dev/null
echo "seeds written to fuzz/$out"
