#!/usr/bin/env bash
# One-off rename: the plugin SDK uses the core's words for the same ideas.
#   receptor_plugin_sdk::WorkState -> UnitState   (the core's unit states)
#   receptor_plugin_sdk::Unit      -> WorkHandle  (the core's handle of a running unit)
# The SDK keeps the old names as aliases (`WorkState`, `Unit`), so plugin sources written
# for them still build; the C ABI and its header are untouched. Only code uses are
# renamed (prose is left alone). Idempotent; run from the repository root, then
# `cargo fmt --all`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Files that use the SDK's Rust layer: the SDK itself, plugins, fixtures, examples, and
# the SDK's README. Doc comments are renamed too (their code forms only).
mapfile -t files < <(grep -rlE '\b(WorkState|Unit)\b' --include='*.rs' --include='*.md' \
  plugin-sdk plugins examples 2>/dev/null | grep -v '/target/' || true)
[[ ${#files[@]} -gt 0 ]] || exit 0

perl -pi -e '
  next if /^pub (type WorkState = UnitState|use self::WorkHandle as Unit);/;
  s/(?<![\w"])WorkState\b/UnitState/g;
  s/\bdyn Unit\b/dyn WorkHandle/g;
  s/\bimpl Unit for\b/impl WorkHandle for/g;
  s/\bpub trait Unit\b/pub trait WorkHandle/g;
  s/`Unit`/`WorkHandle`/g;
  s/(?<=[{,]\s)Unit(?=[,}\s])/WorkHandle/g;
  s/(?<=[{,])Unit(?=[,}])/WorkHandle/g;
  s/(?<=::)Unit\b/WorkHandle/g;
  s/^(\s+)Unit(?=,)/$1WorkHandle/;
  s/^(\s+(?:\/\/!\s+)?)Unit,$/$1WorkHandle,/;
' "${files[@]}"

# The old names stay available as aliases.
if ! grep -q 'pub type WorkState = UnitState;' plugin-sdk/src/work.rs; then
  cat >> plugin-sdk/src/work.rs <<'RS'

/// The earlier name of [`UnitState`].
pub type WorkState = UnitState;
/// The earlier name of [`WorkHandle`].
pub use self::WorkHandle as Unit;
RS
fi
# The crate root re-exports both names: rebuild its `pub use work::{...}` list without
# duplicates, with the aliases in it (the renames above also touch that list).
perl -0pi -e '
  s#pub use work::\{([^\}]*)\};#
    my %seen; my @items = grep { length && !$seen{$_}++ } map { s/^\s+|\s+$//gr } split /,/, $1;
    push @items, grep { !$seen{$_} } qw(Unit WorkState);
    "pub use work::{" . join(", ", sort @items) . "};"
  #e;
' plugin-sdk/src/lib.rs
