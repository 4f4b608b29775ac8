#!/usr/bin/env bash
# Checks deploy/ as far as this machine allows: no Docker daemon and no
# Kubernetes cluster run here, so the image is not built and nothing is
# deployed. What is checked:
#   1. hadolint on deploy/Dockerfile;
#   2. the binary the build stage produces links only libraries the runtime
#      image (distroless cc) has;
#   3. the binary runs as the image's non-root user (uid 65532) under
#      deploy/seccomp-io_uring.json applied through libseccomp, serves the
#      Kubernetes pipeline, answers the probes (/ready, /health), checkpoints
#      and stops cleanly; without io_uring in the profile it refuses to start;
#   4. the Kubernetes manifests validate against the Kubernetes JSON schemas
#      (kubernetes-validate --strict), the generated ConfigMaps are up to
#      date, the pipeline passes `coreline check` and the generated haproxy
#      config passes `haproxy -c`.
# Usage: deploy/check.sh [path/to/release/coreline]   (from .ci/run)
# Needs: hadolint and kubernetes-validate (pip), python3-seccomp, haproxy,
# util-linux's setpriv, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:-target/release/coreline}")"
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
say() { printf -- '-- %s\n' "$*"; }

say "hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile

say "shared libraries are in the runtime image (distroless cc: glibc, libgcc)"
libs="$(ldd "$bin" | awk '{print $1}' | sed 's|.*/||' | sort)"
for lib in $libs; do
  case "$lib" in
    linux-vdso.so.1 | ld-linux-*.so.* | libc.so.6 | libm.so.6 | libgcc_s.so.1 | libpthread.so.0 | libdl.so.2 | librt.so.1) ;;
    *) echo "the binary needs $lib, which distroless cc does not have"; exit 1 ;;
  esac
done
echo "ok: $(echo "$libs" | tr '\n' ' ')"

say "the Kubernetes pipeline passes coreline check"
"$bin" check deploy/kubernetes/counters.toml > /dev/null

say "as uid 65532 under deploy/seccomp-io_uring.json"
free_port() {
  python3 - "$@" <<'PY'
import socket, sys
n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); base = s.getsockname()[1]; s.close()
    try:
        held = []
        for i in range(n):
            t = socket.socket(); t.bind(("127.0.0.1", base + i)); held.append(t)
        for t in held: t.close()
        print(base); break
    except OSError:
        pass
PY
}
base="$(free_port 2)"
admin="$(free_port)"
install -d -m 755 "$tmp/run"
install -m 755 "$bin" "$tmp/run/coreline"
install -d -o 65532 -g 65532 "$tmp/run/checkpoints"
sed -e "s/^host = .*/host = \"127.0.0.1\"/" -e "s/^base_port = .*/base_port = $base/" \
  -e "s/^admin_port = .*/admin_port = $admin/" -e "s|^dir = .*|dir = \"$tmp/run/checkpoints\"|" \
  deploy/kubernetes/counters.toml > "$tmp/run/service.toml"
chmod 644 "$tmp/run/service.toml"
chmod 755 "$tmp"
as_nonroot=(setpriv --reuid=65532 --regid=65532 --clear-groups --no-new-privs
  /usr/bin/python3 deploy/seccomp-exec.py)
"${as_nonroot[@]}" deploy/seccomp-io_uring.json "$tmp/run/coreline" run "$tmp/run/service.toml" \
  > "$tmp/run/stdout" 2> "$tmp/run/stderr" &
pid=$!
pids+=("$pid")
for _ in $(seq 100); do grep -q '^ready' "$tmp/run/stdout" && break; sleep 0.1; done
grep -q '^ready' "$tmp/run/stdout" || { cat "$tmp/run/stderr"; exit 1; }
curl -fsS "127.0.0.1:$admin/ready"; echo
curl -fsS "127.0.0.1:$admin/health"; echo
curl -fsS -H 'X-User: alice' -d '{"user":"alice","amount":5}' "127.0.0.1:$((base + 1))/events"; echo
curl -fsS "127.0.0.1:$base/counts?key=alice"; echo
curl -fsS -X POST -H "X-Coreline-Admin: 1" "127.0.0.1:$admin/checkpoint"; echo
kill -TERM "$pid"
wait "$pid"
ls "$tmp/run/checkpoints" | grep -q '^epoch-' || { echo "no checkpoint written"; exit 1; }
echo "ok: served, probed, checkpointed and stopped (exit 0) as uid 65532 under the profile"

say "without io_uring in the profile, coreline refuses to start"
python3 - deploy/seccomp-io_uring.json "$tmp/no-uring.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
for r in p["syscalls"]:
    r["names"] = [n for n in r["names"] if not n.startswith("io_uring")]
json.dump(p, open(sys.argv[2], "w"))
PY
chmod 644 "$tmp/no-uring.json"
if "${as_nonroot[@]}" "$tmp/no-uring.json" "$tmp/run/coreline" run "$tmp/run/service.toml" \
  > /dev/null 2> "$tmp/no-uring.err"; then
  echo "coreline started without io_uring"; exit 1
fi
cat "$tmp/no-uring.err" >&2; grep -qi "io_uring" "$tmp/no-uring.err"

say "Kubernetes manifests: kubernetes-validate --strict"
kubernetes-validate --strict deploy/kubernetes/*.yaml

say "the generated ConfigMaps are up to date"
OUT="$tmp" deploy/kubernetes/generate.sh "$bin"
for f in pipeline-configmap.yaml haproxy-configmap.yaml; do
  diff -u "deploy/kubernetes/$f" "$tmp/$f" || { echo "run deploy/kubernetes/generate.sh"; exit 1; }
done

say "haproxy -c accepts the generated haproxy config"
"$bin" lb haproxy deploy/kubernetes/counters.toml --instance coreline-0.coreline:8900 \
  --instance coreline-1.coreline:8900 --listen 8000 --out "$tmp/haproxy" > /dev/null
haproxy -c -q -f "$tmp/haproxy/haproxy.cfg"

echo "deploy checks passed"
