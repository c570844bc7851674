#!/usr/bin/env bash
# Runs the whole test suite (installs what the tests need first).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace
cargo nextest run --workspace --no-fail-fast
