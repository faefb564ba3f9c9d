#!/usr/bin/env bash
# Fuzz the HTTP API against its own OpenAPI document with schemathesis.
#
# Starts one standalone ffrtmp-node on 127.0.0.1 (temp data dir and media
# root, one slot, an API key), runs `schemathesis run` against
# /v1/openapi.json with every check, then cancels what is left and stops the
# node by its pid. Exits non-zero on any failure. Bounded: schemathesis gets
# ST_MAX_TIME seconds (default 150) and is killed at ST_HARD_LIMIT (default
# 240); the whole script takes about 4 minutes once ffrtmp-node is built.
#
#   tests/schemathesis/run.sh            # from anywhere in the repository
#   ST_MAX_TIME=60 tests/schemathesis/run.sh
#
# Not part of .ci/run. Needs python3 (3.9+) with venv, ffmpeg, and cargo.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

max_time="${ST_MAX_TIME:-150}"
hard_limit="${ST_HARD_LIMIT:-240}"
seed="${ST_SEED:-}"
venv="$repo/target/schemathesis-venv"
out="$repo/target/schemathesis"
key="schemathesis-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"

# 1. schemathesis, in a venv under target/ (installed once).
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "== installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
"$venv/bin/schemathesis" --version

# 2. The node.
echo "== building ffrtmp-node"
cargo build --quiet -p ffrtmp --bin ffrtmp-node
node_bin="$repo/target/debug/ffrtmp-node"

work="$(mktemp -d "${TMPDIR:-/tmp}/ffrtmp-schemathesis.XXXXXX")"
cgroup_parent="ffrtmp-schemathesis-$$"
node_pid=""
st_pid=""

# Every pid in our own cgroup parent (the jobs' FFmpeg processes).
cgroup_pids() {
  local d
  for d in /sys/fs/cgroup/"$cgroup_parent" /sys/fs/cgroup/*/"$cgroup_parent"; do
    [ -d "$d" ] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done
}

api() { # METHOD PATH: the body on stdout, nothing on failure
  curl -sS --max-time 5 -X "$1" -H "Authorization: Bearer $key" "http://$addr$2" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$st_pid" ] && kill -0 "$st_pid" 2>/dev/null; then
    kill "$st_pid" 2>/dev/null
    wait "$st_pid" 2>/dev/null
  fi
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    # Cancel what the fuzzer left queued or running, then stop the node
    # (it kills its running jobs and removes their cgroups).
    local ids
    ids="$(api GET '/v1/jobs?limit=1000' | python3 -c '
import json, sys
try:
    jobs = json.load(sys.stdin).get("jobs", [])
except ValueError:
    jobs = []
done = {"succeeded", "failed", "cancelled", "timed_out"}
print("\n".join(j["id"] for j in jobs if j.get("state") not in done))')"
    local n=0
    for id in $ids; do
      api POST "/v1/jobs/$id/cancel" >/dev/null
      n=$((n + 1))
    done
    echo "== cleanup: cancelled $n unfinished jobs; stopping node (pid $node_pid)"
    kill -TERM "$node_pid" 2>/dev/null
    local deadline=$((SECONDS + 20))
    while kill -0 "$node_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.2
    done
    if kill -0 "$node_pid" 2>/dev/null; then
      echo "== cleanup: node did not stop; SIGKILL pid $node_pid"
      kill -KILL "$node_pid" 2>/dev/null
    fi
    wait "$node_pid" 2>/dev/null
  fi
  # Anything still in our cgroups was started by our node: kill those pids.
  for pid in $(cgroup_pids); do
    kill -KILL "$pid" 2>/dev/null
  done
  for d in /sys/fs/cgroup/"$cgroup_parent" /sys/fs/cgroup/*/"$cgroup_parent"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  if [ "$rc" -ne 0 ] && [ -f "$work/node.log" ]; then
    mkdir -p "$out"
    cp "$work/node.log" "$out/node.log"
    echo "== node log: $out/node.log"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Jobs the fuzzer gets accepted run real FFmpeg, one at a time (one slot),
# niced by the node. They may not reach the network: RTMP outputs are
# refused by this wrapper (the job fails as an FFmpeg error).
mkdir -p "$work/media" "$work/data"
cat > "$work/ffmpeg" <<'WRAP'
#!/bin/sh
for a in "$@"; do
  case "$a" in
    [rR][tT][mM][pP]:* | [rR][tT][mM][pP][sS]:*)
      echo "schemathesis run: no network from fuzzed jobs ($a refused)" >&2
      exit 1 ;;
  esac
done
exec ffmpeg "$@"
WRAP
chmod +x "$work/ffmpeg"

echo "== starting ffrtmp-node (data dir $work)"
FFRTMP_LOG=info "$node_bin" --role standalone \
  --http 127.0.0.1:0 --http-addr-file "$work/http.addr" \
  --data-dir "$work/data" --media-root "$work/media" \
  --api-key "$key" --slots 1 --kill-grace-s 1 \
  --cgroup-parent "$cgroup_parent" --ffmpeg "$work/ffmpeg" \
  </dev/null >/dev/null 2>"$work/node.log" &
node_pid=$!

addr=""
deadline=$((SECONDS + 60))
while [ -z "$addr" ]; do
  if ! kill -0 "$node_pid" 2>/dev/null; then
    echo "ffrtmp-node exited early:" >&2
    cat "$work/node.log" >&2
    exit 1
  fi
  [ "$SECONDS" -lt "$deadline" ] || { echo "ffrtmp-node did not come up in 60 s" >&2; exit 1; }
  addr="$(cat "$work/http.addr" 2>/dev/null || true)"
  [ -n "$addr" ] || sleep 0.2
done
case "$addr" in
  127.0.0.1:*) ;;
  *) echo "unexpected HTTP address $addr" >&2; exit 1 ;;
esac
echo "== node listening on $addr"

# 3. schemathesis.
mkdir -p "$out"
args=(
  run "http://$addr/v1/openapi.json"
  --url "http://$addr"
  --header "Authorization: Bearer $key"
  --checks all
  --max-time "$max_time"
  --request-timeout 10
  --workers 1
  --generation-database none
  --report junit,ndjson --report-dir "$out"
)
if [ -n "$seed" ]; then
  args+=(--seed "$seed")
fi
echo "== schemathesis ${args[*]/$key/KEY}"
set +e
SCHEMATHESIS_HOOKS="$here/hooks.py" timeout --kill-after=10 "$hard_limit" \
  "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" "${args[@]}" &
st_pid=$!
wait "$st_pid"
st_rc=$?
st_pid=""
set -e
if [ "$st_rc" -eq 124 ] || [ "$st_rc" -eq 137 ]; then
  echo "== schemathesis ran past ${hard_limit}s and was stopped" >&2
fi
echo "== schemathesis exit status $st_rc (reports in $out)"
exit "$st_rc"
