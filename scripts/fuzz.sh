#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each.
#
#   scripts/fuzz.sh [--seconds N] [--mode auto|libfuzzer|stable] [target...]
#
# libfuzzer mode (needs the nightly toolchain and cargo-fuzz): builds fuzz/ with
# `cargo +nightly fuzz build` and runs each target for N seconds (default 15) over its
# committed seeds (fuzz/corpus/<target>, read only) plus what it finds in this run
# (fuzz/corpus-run/<target>, not committed); a crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script. Each target's last status line
# (executions, `cov:` coverage) is printed.
#
# stable mode: the same target functions on stable Rust, every seed and then
# proptest-generated inputs for N seconds per target (tests/fuzz-targets/tests/corpus.rs).
#
# auto (the default) picks libfuzzer when nightly and cargo-fuzz are installed, else
# stable. CI (.ci/run) uses stable: the sanitizer build of fuzz/ alone takes longer than
# CI's time allowance for fuzzing (see fuzz/README.md).
# RECEPTOR_FUZZ_SANITIZER picks cargo fuzz's sanitizer in libfuzzer mode (default
# `address`, cargo fuzz's own default; `none` builds and runs faster).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { echo "fuzz.sh: $*" >&2; }
die() { echo "fuzz.sh: $*" >&2; exit 1; }

seconds=15
mode=auto
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --mode) mode="${2:?--mode needs auto, libfuzzer or stable}"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || die "--seconds must be a whole number, not $seconds"

if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found"

all_targets=()
for f in fuzz/fuzz_targets/*.rs; do
  all_targets+=("$(basename "$f" .rs)")
done
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
  [[ -f "fuzz/fuzz_targets/$t.rs" ]] || die "no fuzz target $t (targets: ${all_targets[*]})"
done

have_libfuzzer() {
  rustup toolchain list 2>/dev/null | grep -q '^nightly' \
    && cargo +nightly fuzz --version >/dev/null 2>&1
}

if [[ "$mode" == auto ]]; then
  if have_libfuzzer; then mode=libfuzzer; else mode=stable; fi
fi

case "$mode" in
  stable)
    log "stable mode: seeds plus generated inputs, ${seconds}s per target"
    filter=()
    for t in "${targets[@]}"; do filter+=("$t"); done
    # One test per target; `--exact` keeps `frame` from also running other names.
    RECEPTOR_FUZZ_SECONDS="$seconds" cargo test -p receptor-fuzz-targets --test corpus \
      -- --exact --nocapture --test-threads 2 "${filter[@]}"
    ;;
  libfuzzer)
    have_libfuzzer || die "libfuzzer mode needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)"
    sanitizer="${RECEPTOR_FUZZ_SANITIZER:-address}"
    log "libfuzzer mode: building fuzz/ (sanitizer $sanitizer)"
    start=$(date +%s)
    cargo +nightly fuzz build --sanitizer "$sanitizer"
    log "build took $(( $(date +%s) - start ))s"
    failed=()
    for t in "${targets[@]}"; do
      mkdir -p "fuzz/corpus-run/$t" "fuzz/artifacts/$t"
      out="fuzz/artifacts/$t/last-run.log"
      log "$t: ${seconds}s"
      if cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" \
          "fuzz/corpus-run/$t" "fuzz/corpus/$t" -- \
          -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
          >"$out" 2>&1; then
        status="ok"
      else
        status="FAILED"
        failed+=("$t")
      fi
      line="$(grep -E '^#[0-9]+' "$out" | tail -n 1 || true)"
      execs="$(grep -E '^stat::number_of_executed_units' "$out" | awk '{print $2}' || true)"
      echo "fuzz: $t: $status, ${execs:-?} executions; last status: ${line:-none}"
      if [[ "$status" == FAILED ]]; then
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$out" | head -n 8 >&2 || true
      fi
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
      die "crashes in: ${failed[*]} (inputs and logs in fuzz/artifacts/<target>/)"
    fi
    ;;
  *) die "unknown mode $mode" ;;
esac
