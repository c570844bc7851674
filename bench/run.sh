#!/usr/bin/env bash
# Side-by-side benchmark of our receptor against the reference Go receptor 1.6.9.
#
#   bench/run.sh [options]        options go to bench/receptor_bench.py (see --help), e.g.
#   bench/run.sh --quick          small sizes, for a smoke run (< 1 minute)
#   bench/run.sh --only local_units_cat,remote_results
#
# Builds the release `receptor` and its plugins (cargo build --release, into
# $CARGO_TARGET_DIR or target/), finds the reference binary (RECEPTOR_REFERENCE_BIN, else
# scripts/reference-receptor, which fetches it on first use), then runs every workload on
# both and prints the comparison. RECEPTOR_BIN skips the build and uses that binary (its
# plugins must sit beside it or on RECEPTOR_PLUGIN_PATH).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -z "${RECEPTOR_BIN:-}" ]]; then
  (cd "$root" && cargo build --release --quiet)
  target="${CARGO_TARGET_DIR:-target}"
  [[ "$target" = /* ]] || target="$root/$target"   # cargo resolves it from $root
  RECEPTOR_BIN="$target/release/receptor"
fi
go_bin="${RECEPTOR_REFERENCE_BIN:-$("$root/scripts/reference-receptor")}"

exec python3 "$root/bench/receptor_bench.py" --rust "$RECEPTOR_BIN" --go "$go_bin" "$@"
