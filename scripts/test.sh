#!/usr/bin/env bash
# Runs every test: sets up what the tests need (scripts/setup-test-env.sh; run as root on a
# fresh Debian machine), then the format and lint checks, a bounded fuzz run of the
# transformer's parser (TASKMESH_FUZZ_SECONDS, default 60), and the whole workspace's tests
# (unit, integration, end-to-end, doc tests).
#
# Every step runs even when an earlier one fails, so one run shows every problem; failed
# steps are listed just before `cargo test`, whose output is always the last. The exit
# status is non-zero when any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)
elapsed() { echo "($(( $(date +%s) - started )) s)"; }
failed=()

scripts/setup-test-env.sh

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$root/.venv/bin:$PATH"
export TASKMESH_VENV="$root/.venv"

echo "== cargo fmt --check $(elapsed)"
cargo fmt --all -- --check || failed+=("cargo fmt --check")

echo "== cargo clippy $(elapsed)"
cargo clippy --workspace --all-targets --locked -- -D warnings || failed+=("cargo clippy")

# cargo-fuzz needs nightly compiler flags: RUSTC_BOOTSTRAP=1 allows them on the stable toolchain.
# The fuzz crate has its own workspace (transformer/fuzz), so normal builds never need them.
fuzz_seconds=${TASKMESH_FUZZ_SECONDS:-60}
echo "== cargo fuzz run parse_and_inject, ${fuzz_seconds} s $(elapsed)"
mkdir -p transformer/fuzz/corpus/parse_and_inject target
fuzz_log="$root/target/fuzz-parse_and_inject.log"
fuzz_status=0
(
  cd transformer &&
    RUSTC_BOOTSTRAP=1 cargo fuzz run parse_and_inject \
      fuzz/corpus/parse_and_inject fuzz/seeds/parse_and_inject \
      -- -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
) >"$fuzz_log" 2>&1 || fuzz_status=$?
# libFuzzer's periodic progress lines ("#1024 pulse ...") stay in the log only.
grep -v -E '^#[0-9]+' "$fuzz_log" || true
if [ "$fuzz_status" -ne 0 ]; then
  echo "fuzzing failed (exit $fuzz_status); crash inputs are in transformer/fuzz/artifacts/" >&2
  failed+=("cargo fuzz (exit $fuzz_status)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED before the tests: ${failed[*]}" >&2
fi
echo "== cargo test $(elapsed)"
test_status=0
cargo test --workspace --locked || test_status=$?
if [ "$test_status" -ne 0 ]; then
  exit "$test_status"
fi
[ ${#failed[@]} -eq 0 ]
