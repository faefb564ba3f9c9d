#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time and report, per target, the
# executions libFuzzer made and whether it found a crash. Exits non-zero when
# any target crashed (its input is under tests/fuzz/artifacts/<target>/).
#
#   tests/fuzz/run.sh                 # 60 s per target
#   FUZZ_SECS=10 tests/fuzz/run.sh    # shorter
#   FUZZ_SANITIZER=none tests/fuzz/run.sh
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
secs="${FUZZ_SECS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=(frame_decode wire_decode handshake_decode job_spec_parse path_resolve)
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi

cd "$root"
cargo fuzz build --fuzz-dir tests/fuzz --sanitizer "$sanitizer"

mkdir -p "$here/logs"
crashed=0
rows=()
for t in "${targets[@]}"; do
    corpus="$here/corpus/$t"
    seeds="$here/seeds/$t"
    mkdir -p "$corpus" "$seeds"
    log="$here/logs/$t.log"
    status=0
    # New inputs go to the first directory (the corpus); seeds are read only.
    cargo fuzz run --fuzz-dir tests/fuzz --sanitizer "$sanitizer" "$t" "$corpus" "$seeds" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n1 | grep -o '[0-9]*$' || true)"
    if [[ $status -ne 0 ]] || grep -qE '^(==[0-9]+== ?ERROR|SUMMARY: libFuzzer)|panicked at|deadly signal' "$log"; then
        finding="CRASH (exit $status; see $log and tests/fuzz/artifacts/$t/)"
        crashed=1
    else
        finding="none"
    fi
    rows+=("$(printf '%-18s %6s %14s  %s' "$t" "$secs" "${execs:-?}" "$finding")")
    echo "$t: ${execs:-?} executions in ${secs}s, findings: $finding"
done

echo
printf '%-18s %6s %14s  %s\n' target seconds executions findings
printf '%s\n' "${rows[@]}"
exit "$crashed"
