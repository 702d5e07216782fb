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
# fuzz DIR TARGET SECONDS SEEDS...: a bounded libFuzzer run of one target; a crash fails the suite.
fuzz() {
  local dir=$1 target=$2 seconds=$3
  shift 3
  echo "== cargo fuzz run $target ($dir), ${seconds} s $(elapsed)"
  mkdir -p "$dir/fuzz/corpus/$target" target
  local log="$root/target/fuzz-$target.log" status=0
  (
    cd "$dir" &&
      RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" "$@" \
        -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  ) >"$log" 2>&1 || status=$?
  # libFuzzer's periodic progress lines ("#1024 pulse ...") stay in the log only.
  grep -v -E '^#[0-9]+' "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "fuzzing $target failed (exit $status); crash inputs are in $dir/fuzz/artifacts/" >&2
    failed+=("cargo fuzz $target (exit $status)")
  fi
}
fuzz transformer parse_and_inject "$fuzz_seconds" fuzz/seeds/parse_and_inject
fuzz mesh document "$(( (fuzz_seconds + 1) / 2 ))"

if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED before the tests: ${failed[*]}" >&2
fi
echo "== cargo test $(elapsed)"
test_status=0
cargo test --workspace --locked --no-fail-fast || test_status=$?
if [ "$test_status" -ne 0 ]; then
  exit "$test_status"
fi
[ ${#failed[@]} -eq 0 ]
