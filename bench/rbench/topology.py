"""The node sets the workloads run on, started fresh for each workload.

* `single_node`: one node with a TCP listener (Go receptor refuses to run without a backend)
  and the local work types: `cat` (`work-command` running `cat`), `zeros` (`work-command`
  running `head -c <N> /dev/zero`) and, on our implementation only, `echo` (the
  `echo-worktype` plugin, which copies stdin to stdout inside the node).
* `line`: A - B - C over TCP on 127.0.0.1 (B listens, A and C dial B), so that work and
  streams between A and C cross two hops. C carries the work types (and B too when asked,
  for work one hop away); A and C may get extra entries (proxies).
"""

from __future__ import annotations

import os

import time
from dataclasses import dataclass

from . import control
from .node import Node, free_port

#: How long a line gets for its routes to converge.
CONVERGE_TIMEOUT = 30.0

#: Pause between two `status` polls while waiting for routes.
POLL_INTERVAL = 0.02


@dataclass(frozen=True)
class Impl:
    """One receptor implementation under test."""

    #: `go` or `rust`.
    name: str
    #: Path of its `receptor` binary.
    binary: str

    @property
    def has_echo_worktype(self) -> bool:
        """Only our implementation ships the `echo-worktype` plugin."""
        return self.name == "rust"


def listener(port: int) -> tuple[str, dict]:
    return ("tcp-listener", {"port": port, "bindaddr": "127.0.0.1"})


def peer(port: int) -> tuple[str, dict]:
    return ("tcp-peer", {"address": f"127.0.0.1:{port}"})


def work_types(impl: Impl, zeros_bytes: int) -> list[tuple[str, dict]]:
    """The work types both sides of a comparison run (plus `echo` on ours)."""
    entries: list[tuple[str, dict]] = [
        ("work-command", {"worktype": "cat", "command": "cat"}),
        ("work-command", {"worktype": "zeros", "command": "head",
                          "params": f"-c {zeros_bytes} /dev/zero"}),
    ]
    if impl.has_echo_worktype:
        entries.append(("echo-worktype", {"worktype": "echo"}))
    return entries


def single_node(impl: Impl, zeros_bytes: int = 0, minimal: bool = False,
                isolated: tuple[str, ...] = ()) -> Node:
    """A started single node (see the module doc). `minimal` keeps only the listener and the
    `cat` work type, the same on both implementations (for the idle measures). `isolated`
    names plugin libraries beside the binary (e.g. `libreceptor_command.so`) that the node
    loads with `isolation: process` (ours only)."""
    entries = [listener(free_port())]
    if isolated:
        folder = os.path.dirname(os.path.abspath(impl.binary))
        entries.append(("plugins", [{"path": os.path.join(folder, lib), "isolation": "process"}
                                    for lib in isolated]))
    if minimal:
        entries.append(("work-command", {"worktype": "cat", "command": "cat"}))
    else:
        entries += work_types(impl, zeros_bytes)
    node = Node(impl.name, impl.binary, "a", entries)
    try:
        node.start()
    except BaseException:
        node.remove()
        raise
    return node


class Line:
    """A started A - B - C line; `nodes` in that order."""

    def __init__(self, impl: Impl, zeros_bytes: int = 0,
                 a_extra: list | None = None, c_extra: list | None = None,
                 b_work: bool = False):
        port_b = free_port()
        self.a = Node(impl.name, impl.binary, "A", [peer(port_b)] + (a_extra or []))
        self.b = Node(impl.name, impl.binary, "B", [listener(port_b)]
                      + (work_types(impl, zeros_bytes) if b_work else []))
        self.c = Node(impl.name, impl.binary, "C",
                      [peer(port_b)] + work_types(impl, zeros_bytes) + (c_extra or []))
        self.nodes = [self.a, self.b, self.c]
        try:
            for node in (self.b, self.a, self.c):
                node.start()
            wait_route(self.a, "C")
            wait_route(self.c, "A")
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()


def wait_route(node: Node, dest: str) -> None:
    """Polls `status` until `dest` is in the node's routing table."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        last = control.command(node.socket, "status")
        if dest in (last.get("RoutingTable") or {}):
            return
        time.sleep(POLL_INTERVAL)
    raise control.ControlError(
        f"{node.impl} node {node.node_id}: no route to {dest} after {CONVERGE_TIMEOUT}s; "
        f"last status {last}\n{node.log_tail()}")
