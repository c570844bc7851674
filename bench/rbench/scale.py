"""Scale workloads: what a node costs as its work and its mesh grow (bench/README.md,
"Scale").

* `units_finished`: `work list`, memory and restart time of a node holding thousands of
  finished units. The units are copies of a few units the node itself ran (its own on-disk
  format), made directly on disk: Go receptor takes about 0.8 s per local unit, so submitting
  10,000 would take hours. Both implementations get their copies the same way.
* `units_running`: hundreds of units running at once (`sleep`): memory and CPU of the node
  and of everything it started while they run, `work list`, and the time to cancel them all.
* `mesh`: a mesh of hundreds of nodes on this machine (a binary tree: node i dials node
  (i-1)/2), started one after the other: time until every node routes to every other after
  the last one greeted, memory per node, idle CPU of the whole mesh.
* `join_line`: a node joins the end of a converged line of n nodes: time until every node
  routes to every other one.
"""

from __future__ import annotations

import os
import random
import socket
import string
import threading
import time
from typing import Callable

from . import control
from .node import MIB, Node, descendants, free_port, read_usage
from .topology import Impl, listener, peer
from .workloads import Meter, Settings, latency_stats, submit_when_ready, wait_finished

#: How long a restarted node gets to list every unit it holds.
SERVED_TIMEOUT = 120.0

#: How long the running units get to all be Running, and later to all be cancelled.
RUNNING_TIMEOUT = 180.0

#: How long a mesh or a line gets to route completely.
MESH_TIMEOUT = 120.0

#: `work list` repetitions timed on a loaded node.
LIST_REPEATS = 7

#: Submitters / cancellers working at once.
CONCURRENCY = 8

#: Pause between two polls of a slowly changing state (units starting, processes ending).
POLL_S = 0.05

ID_CHARS = string.ascii_letters + string.digits


def timed_command(path: str, line: str) -> tuple[float, bytes]:
    """Seconds from connecting to the last byte of the reply line of `line` (the greeting
    included, the client's JSON parsing not), and the reply."""
    t0 = time.perf_counter()
    with control.Control(path) as ctl:
        ctl.sock.sendall(line.encode() + b"\n")
        reply = ctl.read_line()
    return time.perf_counter() - t0, reply


def timed_list(path: str, expect: int) -> dict:
    """`work list` timed LIST_REPEATS times; every answer must hold `expect` units."""
    times = []
    for _ in range(LIST_REPEATS):
        took, reply = timed_command(path, '{"command":"work","subcommand":"list"}')
        units = control.parse_reply(reply)
        if len(units) != expect:
            raise control.ControlError(f"work list has {len(units)} units, not {expect}")
        times.append(took)
    stats = latency_stats(times)
    stats["reply_bytes"] = len(reply)
    return stats


def pss(pid: int) -> int:
    """Proportional set size of a process (shared pages split among their users), bytes;
    0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_cpu(pids: list[int]) -> float:
    """user+sys seconds of the given processes themselves (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            total += read_usage(pid).cpu_self
        except (OSError, IndexError, ValueError):
            pass
    return total


# --- finished units ------------------------------------------------------------------------

def _clone_units(unit_root: str, seeds: list[str], count: int, rng: random.Random) -> None:
    """Fills `unit_root` up to `count` unit folders with copies of the files of the `seeds`
    folders under new random IDs of the same form (the seed's first character and 8 random
    ones)."""
    have = set(os.listdir(unit_root))
    contents = []
    for seed in seeds:
        files = {}
        for name in os.listdir(os.path.join(unit_root, seed)):
            with open(os.path.join(unit_root, seed, name), "rb") as f:
                files[name] = f.read()
        contents.append((seed, files))
    i = 0
    while len(have) < count:
        seed, files = contents[i % len(contents)]
        i += 1
        new = seed[0] + "".join(rng.choice(ID_CHARS) for _ in range(8))
        if new in have:
            continue
        os.mkdir(os.path.join(unit_root, new))
        for name, data in files.items():
            with open(os.path.join(unit_root, new, name), "wb") as f:
                f.write(data)
        have.add(new)


def units_finished(impl: Impl, s: Settings) -> dict:
    """A node holding `scale_units` finished `cat` units: restart time until `work list`
    serves them all, `work list` time, memory and CPU of the restart."""
    count = s.scale_units
    node = Node(impl.name, impl.binary, "a", [
        listener(free_port()), ("work-command", {"worktype": "cat", "command": "cat"})])
    try:
        node.start()
        seeds = [submit_when_ready(node.socket, "localhost", "cat", b"finished unit %d\n" % i)
                 for i in range(3)]
        if wait_finished(node.socket, seeds)[1]:
            raise control.ControlError("the seed units never finished")
        node.stop()
        unit_root = os.path.join(node.datadir, node.node_id)
        t = time.perf_counter()
        _clone_units(unit_root, seeds, count, random.Random(count))
        made_s = time.perf_counter() - t

        t0 = time.perf_counter()
        node.start()
        greeted = time.perf_counter()
        deadline = t0 + SERVED_TIMEOUT
        while True:
            try:
                listed = len(control.work_list(node.socket))
            except control.ControlError:
                listed = -1
            if listed >= count:
                break
            if time.perf_counter() > deadline:
                raise control.ControlError(f"restarted node lists {listed} of {count} units "
                                           f"after {SERVED_TIMEOUT:.0f}s")
        served = time.perf_counter()
        restart = node.usage()
        meter = Meter([node])
        listing = timed_list(node.socket, count)
        resources = meter.stop()
        after = node.usage()
    finally:
        node.remove()
    return {"metrics": {
        "units_on_disk": count,
        "units_made_on_disk_s": round(made_s, 2),
        "restart_to_greeting_ms": round((greeted - t0) * 1000, 1),
        "restart_to_served_list_ms": round((served - t0) * 1000, 1),
        "restart_cpu_s": round(restart.cpu_self, 3),
        "restart_peak_rss_mib": round(restart.peak_rss / MIB, 2),
        "work_list": listing,
        "rss_mib": round(after.rss / MIB, 2),
        "rss_anon_mib": round(after.rss_anon / MIB, 2),
    }, "resources": resources}


# --- running units -------------------------------------------------------------------------

def _states(sock: str, ids: list[str]) -> dict[int, int]:
    """How many of `ids` are in each state (missing ones under -1)."""
    listing = control.work_list(sock)
    out: dict[int, int] = {}
    for unit in ids:
        st = listing.get(unit)
        state = -1 if st is None else st.get("State", -1)
        out[state] = out.get(state, 0) + 1
    return out


def _parallel(items: list, work: Callable) -> list:
    """`work(item)` for every item by CONCURRENCY threads; returns the results in order and
    raises the first error."""
    results: list = [None] * len(items)
    errors: list[BaseException] = []
    counter = iter(range(len(items)))
    lock = threading.Lock()

    def worker() -> None:
        try:
            while not errors:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                results[i] = work(items[i])
        except BaseException as e:  # raised below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def units_running(impl: Impl, s: Settings) -> dict:
    """`running_units` units of `sleep 3600` submitted by CONCURRENCY clients at once; once all
    are Running: the node's memory, its CPU and that of everything it started over
    `running_window_s`, `work list`; then every unit cancelled (by CONCURRENCY clients), timed
    until none is pending or running and until the node's processes are gone."""
    count = s.running_units
    node = Node(impl.name, impl.binary, "a", [
        listener(free_port()),
        ("work-command", {"worktype": "sleep", "command": "sleep", "params": "3600"})])
    try:
        node.start()
        start_before = node.usage()
        first = submit_when_ready(node.socket, "localhost", "sleep", b"")
        t0 = time.perf_counter()
        ids = [first] + _parallel(
            list(range(count - 1)),
            lambda _: control.submit_json(node.socket, "localhost", "sleep", b""))
        submitted = time.perf_counter()
        deadline = t0 + RUNNING_TIMEOUT
        while True:
            states = _states(node.socket, ids)
            if states.get(1, 0) == count:
                break
            if set(states) - {-1, 0, 1}:
                raise control.ControlError(f"units ended while starting: states {states}")
            if time.perf_counter() > deadline:
                raise control.ControlError(f"not all running after {RUNNING_TIMEOUT:.0f}s: "
                                           f"states {states}")
            time.sleep(POLL_S)
        running = time.perf_counter()
        # CPU of starting them: the node's own, and with everything it started (its
        # reaped children and the processes still running: runners, commands).
        kids = descendants(node.pid)
        start_after = node.usage()
        start_self = start_after.cpu_self - start_before.cpu_self
        start_all = (start_after.cpu_self + start_after.cpu_children + tree_cpu(kids)
                     - start_before.cpu_self - start_before.cpu_children)

        # The steady state: everything runs, nothing changes.
        before = node.usage()
        kids_before = tree_cpu(kids)
        time.sleep(s.running_window_s)  # the window being measured
        after = node.usage()
        kids_cpu = tree_cpu(kids) - kids_before
        node_pss = pss(node.pid)
        kids_pss = sum(pss(p) for p in kids)
        listing = timed_list(node.socket, count)

        t1 = time.perf_counter()
        _parallel(ids, lambda u: control.command(node.socket, f"work cancel {u}"))
        cancel_sent = time.perf_counter()
        deadline = t1 + RUNNING_TIMEOUT
        while True:
            states = _states(node.socket, ids)
            if not states.get(0) and not states.get(1):
                break
            if time.perf_counter() > deadline:
                raise control.ControlError(f"not all cancelled after {RUNNING_TIMEOUT:.0f}s: "
                                           f"states {states}")
            time.sleep(POLL_S)
        cancelled = time.perf_counter()
        while descendants(node.pid) and time.perf_counter() < deadline:
            time.sleep(POLL_S)
        left = len(descendants(node.pid))
        gone = time.perf_counter()
    finally:
        node.remove()
    window = s.running_window_s
    node_cpu = after.cpu_self - before.cpu_self
    return {"metrics": {
        "running": count,
        "processes_per_unit": round(len(kids) / count, 2),
        "submit_s": round(submitted - t0, 2),
        "all_running_s": round(running - t0, 2),
        "start_cpu_ms_per_unit": round(start_all * 1000 / count, 3),
        "start_cpu_self_ms_per_unit": round(start_self * 1000 / count, 3),
        "window_s": window,
        "node_rss_mib": round(after.rss / MIB, 2),
        "node_rss_anon_mib": round(after.rss_anon / MIB, 2),
        "node_pss_mib": round(node_pss / MIB, 2),
        "all_processes_pss_mib": round((node_pss + kids_pss) / MIB, 1),
        "node_cpu_s_per_10s": round(node_cpu * 10 / window, 3),
        "all_processes_cpu_s_per_10s": round((node_cpu + kids_cpu) * 10 / window, 3),
        "work_list": listing,
        "cancel_commands_s": round(cancel_sent - t1, 3),
        "cancel_all_s": round(cancelled - t1, 3),
        "processes_gone_s": round(gone - t1, 3),
        "processes_left": left,
    }}


# --- a mesh of many nodes ------------------------------------------------------------------

#: Starts of a node whose listener port was taken meanwhile (by another process's outgoing
#: connection, say), each with a new port.
PORT_ATTEMPTS = 4


def start_listening(impl: Impl, node_id: str, extra: list) -> tuple[Node, int]:
    """Starts a node with a tcp-listener on a port free right now, plus `extra` entries;
    picks another port if that one was taken before the node could bind it. Returns the
    node and its port."""
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        node = Node(impl.name, impl.binary, node_id, [listener(port)] + extra)
        try:
            node.start()
            return node, port
        except control.ControlError:
            in_use = "in use" in node.log_tail()
            node.remove()
            if not in_use or attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _routes(node: Node) -> int:
    """How many destinations the node's routing table has right now."""
    return len(control.command(node.socket, "status").get("RoutingTable") or {})


def _wait_all_routed(nodes: list[Node], deadline: float) -> tuple[float, float, float]:
    """Polls `status` of every node not yet seen routing to all the others, round robin,
    until all are. Returns (upper, lower, sweep): the moment the last node was seen
    complete (perf_counter, after its answer), the latest moment a node was still seen
    incomplete (before its request), and the time of one status poll of every node."""
    want = len(nodes) - 1
    pending = list(nodes)
    upper = lower = time.perf_counter()
    t_sweep = time.perf_counter()
    sweep = None
    while pending:
        still = []
        for node in pending:
            asked = time.perf_counter()
            if _routes(node) >= want:
                upper = time.perf_counter()
            else:
                lower = max(lower, asked)
                still.append(node)
        if sweep is None:
            sweep = time.perf_counter() - t_sweep
        pending = still
        if pending and time.perf_counter() > deadline:
            raise control.ControlError(
                f"{len(pending)} nodes do not route to all {want} others, e.g. "
                f"{pending[0].node_id} routes to {_routes(pending[0])}")
    return upper, lower, sweep or 0.0


def mesh(impl: Impl, s: Settings) -> dict:
    """`mesh_nodes` nodes as a binary tree (node i dials node (i-1)/2; every node listens),
    started one after the other, each once its parent greeted: the time from the last
    node's greeting until every node routes to every other; then each node's memory and the
    CPU of the whole mesh idle for `mesh_idle_s`."""
    n = s.mesh_nodes
    ports: list[int] = []
    nodes: list[Node] = []
    try:
        t_start = time.perf_counter()
        for i in range(n):
            extra = [peer(ports[(i - 1) // 2])] if i else []
            node, port = start_listening(impl, f"n{i:03d}", extra)
            nodes.append(node)
            ports.append(port)
        last_greeting = time.perf_counter()
        last_spawn = last_greeting - (nodes[-1].startup_s or 0.0)
        upper, lower, sweep = _wait_all_routed(nodes, last_greeting + MESH_TIMEOUT)
        time.sleep(2.0)  # settle: the last updates and advertisements, not measured
        before = [x.usage() for x in nodes]
        t = time.perf_counter()
        time.sleep(s.mesh_idle_s)  # the idle window being measured
        window = time.perf_counter() - t
        after = [x.usage() for x in nodes]
        psses = [pss(x.pid) for x in nodes]
    finally:
        for node in nodes:
            node.remove()
    idle_cpu = sum(a.cpu_self - b.cpu_self for a, b in zip(after, before))
    return {"metrics": {
        "nodes": n,
        "start_all_s": round(last_greeting - t_start, 2),
        "routed_after_last_greeting_s": round(upper - last_greeting, 3),
        "routed_after_last_greeting_lower_s": round(max(0.0, lower - last_greeting), 3),
        "routed_after_last_spawn_s": round(upper - last_spawn, 3),
        "status_sweep_s": round(sweep, 3),
        "rss_per_node_mib": round(sum(a.rss for a in after) / n / MIB, 2),
        "rss_anon_per_node_mib": round(sum(a.rss_anon for a in after) / n / MIB, 2),
        "pss_per_node_mib": round(sum(psses) / n / MIB, 2),
        "rss_total_mib": round(sum(a.rss for a in after) / MIB, 1),
        "idle_window_s": round(window, 2),
        "idle_cpu_s_per_30s": round(idle_cpu * 30 / window, 3),
    }}


# --- a node joining a line -----------------------------------------------------------------

class HeldLink:
    """A TCP relay on 127.0.0.1 that accepts one connection and holds it until `release()`,
    which connects it to `upstream` and relays both ways: the link comes up at a moment the
    benchmark chooses, after the joining node has started."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.accepted: socket.socket | None = None

    def release(self) -> float:
        """Connects the held connection upstream and starts relaying; returns perf_counter()
        just before the upstream connect."""
        self.listener.settimeout(10.0)
        down, _ = self.listener.accept()
        t = time.perf_counter()
        up = socket.create_connection(("127.0.0.1", self.upstream), timeout=10.0)
        for sock in (down, up):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
        self.socks = [down, up]
        for a, b in ((down, up), (up, down)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
        return t

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for sock in self.socks + [self.listener]:
            sock.close()


def _routes_to(node: Node) -> dict:
    return control.command(node.socket, "status").get("RoutingTable") or {}


def join_line(length: int) -> Callable[[Impl, Settings], dict]:
    """A line of `length` nodes (node i dials node i-1) converges; then, `joins` times, a
    new node (a new ID each time, so that the line's nodes answer it as a node new to
    them) starts with a peer entry to a `HeldLink` in front of the last node; once it has
    greeted, the link is released, and the time runs until the new node routes to every
    line node and the first line node routes to the new node (on a line, that means every
    node routes to every other). The first and the new node are polled alternately."""

    def run(impl: Impl, s: Settings) -> dict:
        ports: list[int] = []
        line: list[Node] = []
        joiner: Node | None = None
        link: HeldLink | None = None
        samples, lowers = [], []
        try:
            for i in range(length):
                node, port = start_listening(impl, f"l{i:02d}", [peer(ports[-1])] if i else [])
                line.append(node)
                ports.append(port)
            first, last = line[0], line[-1]
            deadline = time.perf_counter() + MESH_TIMEOUT
            while len(_routes_to(first)) < length - 1 or len(_routes_to(last)) < length - 1:
                if time.perf_counter() > deadline:
                    raise control.ControlError(f"the line of {length} did not converge")
                time.sleep(POLL_S)
            time.sleep(1.0)  # settle: the last triggered updates, not measured
            for j in range(s.joins):
                link = HeldLink(ports[-1])
                name = f"x{j}"
                joiner = Node(impl.name, impl.binary, name, [peer(link.port)])
                joiner.start()
                t0 = link.release()
                deadline = t0 + MESH_TIMEOUT
                lower = t0
                while True:
                    asked = time.perf_counter()
                    if len(_routes_to(joiner)) >= length:
                        asked = time.perf_counter()
                        if name in _routes_to(first):
                            break
                    lower = asked
                    if asked > deadline:
                        raise control.ControlError(f"{name} not routed after {MESH_TIMEOUT}s")
                done = time.perf_counter()
                samples.append(done - t0)
                lowers.append(lower - t0)
                # Every line node routes to the new one (checked, not timed).
                missing = [x.node_id for x in line if name not in _routes_to(x)]
                if missing:
                    raise control.ControlError(f"{missing} do not route to {name}")
                joiner.remove()
                joiner = None
                link.close()
                link = None
                # The line forgets the route before the next join (not timed).
                while name in _routes_to(first):
                    if time.perf_counter() > deadline:
                        raise control.ControlError(f"{name} still routed after it left")
                    time.sleep(POLL_S)
                time.sleep(0.5)
        finally:
            if joiner is not None:
                joiner.remove()
            if link is not None:
                link.close()
            for node in line:
                node.remove()
        return {"metrics": {
            "line": length,
            "joins": len(samples),
            "join_routed": latency_stats(samples),
            "join_routed_lower_ms": [round(x * 1000, 2) for x in lowers],
        }}

    return run
