#!/usr/bin/env bash
# One-off rename: unit-test files follow one rule. A module's unit tests are `tests.rs`
# beside it; a further file of tests for the same module is `<topic>_tests.rs`
# (`mesh_tests.rs`, `signing_tests.rs`, `fuzz_tests.rs`). Renames the files that put the
# topic last and their `mod` lines. Idempotent; run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

find core plugin-sdk plugins -path '*/target' -prune -o -name 'tests_*.rs' -print | while read -r old; do
  dir=$(dirname "$old"); base=$(basename "$old" .rs); topic=${base#tests_}
  new="$dir/${topic}_tests.rs"
  git mv "$old" "$new"
  # The declaring module: mod.rs / lib.rs in the folder, or the folder's sibling file.
  for parent in "$dir/mod.rs" "$dir/lib.rs" "$dir.rs"; do
    if [[ -f "$parent" ]]; then
      perl -pi -e "s/\\bmod ${base};/mod ${topic}_tests;/" "$parent"
    fi
  done
done
