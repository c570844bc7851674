#!/usr/bin/env bash
# One-off rename: the three types called `Node` get names that say which one they are.
#   receptor_proto::node::Node   (the protocol state of one node)  -> NodeState
#   receptor_core::daemon::Node  (the running daemon)              -> Daemon
#   receptor_tests::Node         (the test harness's process)      -> NodeProcess
# Only code uses are renamed: `Node` followed by `::`, `{`, `}`, `>`, `,`, `)`, `;`, `]`,
# `=` or a backtick (doc links); prose such as "Node ID: x" or "Node `id`" is left alone.
# Idempotent; run from the repository root on any tree, then `cargo fmt`.
set -euo pipefail
cd "$(dirname "$0")/.."

rename() { # NEW FILE...
  local new="$1"; shift
  [[ $# -gt 0 ]] || return 0
  perl -pi -e 's/(?<![\w"])Node(?=::|\s*[{}>,);\]=]|`)/'"$new"'/g' "$@"
}

# The protocol state: receptor-proto's node module and every file that imports it (the
# mesh actor, fuzz targets). First, so that the passes below find no `Node` of it left.
mapfile -t proto < <(ls core/proto/src/node.rs core/proto/src/lib.rs; find core/proto/src/node -name '*.rs'; \
  grep -rl 'receptor_proto::node::' --include='*.rs' core bench tests plugins 2>/dev/null | grep -v '^core/src/work/' || true)
rename NodeState "${proto[@]}"

# The running daemon.
mapfile -t daemon < <(find core/src/daemon -name '*.rs'; \
  grep -rlE 'daemon::(Node|\{[^}]*\bNode\b)' --include='*.rs' core bench tests plugins 2>/dev/null || true)
rename Daemon $(printf '%s\n' "${daemon[@]}" | sort -u)

# The test harness's process: the harness itself and every test that uses it.
mapfile -t harness < <(find tests -name '*.rs'; \
  grep -rl 'receptor_tests' --include='*.rs' core/tests core/src plugins bench 2>/dev/null | grep -v '^core/src/work/' || true)
rename NodeProcess $(printf '%s\n' "${harness[@]}" | sort -u)
