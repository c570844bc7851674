"""The workloads. Each runs on fresh nodes of one implementation and returns its figures
(`metrics`) plus the CPU time and peak RSS of every node over the workload (`resources`,
see `Meter`).

A workload that an implementation cannot run yet (a feature not there) raises `Skip` with the
reason, which the report shows instead of figures.
"""

from __future__ import annotations

import math
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

from . import control
from .node import MIB, Node, free_port, reset_peak_rss
from .topology import Impl, Line, single_node

MB = 1_000_000

#: Mesh service name of the byte sink on node C (a tcp-client proxy to the benchmark's sink).
SINK_SERVICE = "sink"

#: How long the first remote unit gets before remote work is declared not working.
REMOTE_PROBE_TIMEOUT = 30.0

#: How long a proxy gets to bring the first connection to the sink.
SINK_ACCEPT_TIMEOUT = 10.0

#: Longest pause in a byte stream before the stream is declared stuck.
STREAM_IDLE_TIMEOUT = 30.0

#: Send/receive block size of the stream workloads.
BLOCK = 1 << 20


class Skip(Exception):
    """The implementation cannot run this workload (yet); the message says why."""


@dataclass
class Settings:
    """Sizes and bounds of a run (command-line options)."""

    startups: int = 5
    idle_settle_s: float = 3.0
    units: int = 200
    unit_budget_s: float = 40.0
    submits: int = 200
    results_mb: int = 200
    remote_runs: int = 10
    remote_budget_s: float = 40.0
    stream_mb: int = 100
    transfer_budget_s: float = 45.0
    throughput_units: int = 300
    throughput_budget_s: float = 20.0
    # The scale workloads (rbench/scale.py, run with --scale).
    scale_units: int = 10_000
    running_units: int = 500
    running_window_s: float = 10.0
    mesh_nodes: int = 200
    mesh_idle_s: float = 30.0
    joins: int = 5


class Meter:
    """CPU seconds (user+sys: the node's own, and its reaped children's such as work-unit
    runners) and peak RSS of each node between construction and `stop()`. The peak is reset
    at the start where the kernel allows it (`/proc/<pid>/clear_refs`), so it covers the
    workload rather than the start-up."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes
        self.peak_reset = all([reset_peak_rss(n.pid) for n in nodes])
        self.before = {n.node_id: n.usage() for n in nodes}
        self.t0 = time.perf_counter()

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        per_node = {}
        for n in self.nodes:
            after, before = n.usage(), self.before[n.node_id]
            per_node[n.node_id] = {
                "cpu_self_s": round(after.cpu_self - before.cpu_self, 3),
                "cpu_children_s": round(after.cpu_children - before.cpu_children, 3),
                "peak_rss_mib": round(after.peak_rss / MIB, 2),
                "rss_end_mib": round(after.rss / MIB, 2),
            }
        return {
            "wall_s": round(wall, 3),
            "peak_reset": self.peak_reset,
            "nodes": per_node,
            "cpu_total_s": round(sum(v["cpu_self_s"] + v["cpu_children_s"]
                                     for v in per_node.values()), 3),
            "peak_rss_max_mib": max(v["peak_rss_mib"] for v in per_node.values()),
        }


def latency_stats(samples: list[float]) -> dict:
    """Milliseconds over `samples` (seconds): median, p95 (nearest rank), min, max, mean."""
    ordered = sorted(samples)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def payload(i: int) -> bytes:
    """The stdin of the i-th small unit."""
    return b"receptor benchmark unit %d\n" % i


def run_unit(sock: str, node: str, worktype: str, i: int,
             timeout: float = control.DEFAULT_TIMEOUT) -> float:
    """Submits one small unit on `node` through the control socket `sock` and follows its
    results to their end; returns the seconds taken. The results must equal the payload
    (`cat` and `echo` copy stdin to stdout)."""
    data = payload(i)
    t0 = time.perf_counter()
    unit = control.submit(sock, node, worktype, data, timeout)
    res = control.results(sock, unit, keep=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    if res.data != data:
        raise control.ControlError(f"unit {unit}: results {res.data[:100]!r} instead of {data!r}")
    return elapsed


def bounded_loop(count: int, budget_s: float,
                 step: Callable[[int], float]) -> tuple[list[float], float]:
    """Runs `step(i)` for i in 0..count, stopping early once `budget_s` has passed; returns the
    samples and the wall time of the loop."""
    samples = []
    t0 = time.perf_counter()
    for i in range(count):
        if i and time.perf_counter() - t0 > budget_s:
            break
        samples.append(step(i))
    return samples, time.perf_counter() - t0


# --- 1. start-up and idle memory ----------------------------------------------------------

def startup_idle(impl: Impl, s: Settings) -> dict:
    """Spawn to greeting (over `startups` fresh starts), then the RSS and the CPU used by the
    last node while idle for `idle_settle_s`."""
    times = []
    node = None
    for _ in range(s.startups):
        if node is not None:
            node.remove()
        node = single_node(impl, minimal=True)
        times.append(node.startup_s)
    assert node is not None
    try:
        before = node.usage()
        time.sleep(s.idle_settle_s)  # the idle window being measured
        after = node.usage()
    finally:
        node.remove()
    return {"metrics": {
        "startup_ms": latency_stats(times),
        "idle_rss_mib": round(after.rss / MIB, 2),
        "idle_rss_anon_mib": round(after.rss_anon / MIB, 2),
        "idle_rss_file_mib": round(after.rss_file / MIB, 2),
        "idle_cpu_ms": round((after.cpu_self - before.cpu_self) * 1000, 1),
        "idle_window_s": s.idle_settle_s,
    }}


# --- 2./3. local units: rate and latency --------------------------------------------------

def local_units(worktype: str) -> Callable[[Impl, Settings], dict]:
    """Sequential small units of `worktype` on one node, each followed to the end of its
    results: units per second and the per-unit latency (submit to end of results)."""

    def run(impl: Impl, s: Settings) -> dict:
        if worktype == "echo" and not impl.has_echo_worktype:
            raise Skip("no echo-worktype plugin in Go receptor")
        node = single_node(impl)
        try:
            for i in range(3):  # warm-up, not measured
                run_unit(node.socket, "localhost", worktype, i)
            meter = Meter([node])
            samples, wall = bounded_loop(
                s.units, s.unit_budget_s, lambda i: run_unit(node.socket, "localhost", worktype, i))
            resources = meter.stop()
        finally:
            node.remove()
        return {"metrics": {
            "units": len(samples),
            "wall_s": round(wall, 3),
            "units_per_s": round(len(samples) / wall, 2),
            "latency": latency_stats(samples),
        }, "resources": resources}

    return run


def submit_rate(worktype: str) -> Callable[[Impl, Settings], dict]:
    """Sequential `work submit` of small `worktype` units without waiting for their results."""

    def run(impl: Impl, s: Settings) -> dict:
        if worktype == "echo" and not impl.has_echo_worktype:
            raise Skip("no echo-worktype plugin in Go receptor")
        node = single_node(impl)
        try:
            meter = Meter([node])

            def step(i: int) -> float:
                t0 = time.perf_counter()
                control.submit(node.socket, "localhost", worktype, payload(i))
                return time.perf_counter() - t0

            samples, wall = bounded_loop(s.submits, s.unit_budget_s, step)
            resources = meter.stop()
        finally:
            node.remove()
        return {"metrics": {
            "submits": len(samples),
            "submits_per_s": round(len(samples) / wall, 2),
            "latency": latency_stats(samples),
        }, "resources": resources}

    return run


# --- 2c. unit throughput: units finished per second ---------------------------------------

#: Pause between two `work list` polls while waiting for submitted units to finish.
FINISH_POLL_S = 0.01

#: Units that made no progress for this long are counted as stuck.
FINISH_TIMEOUT = 20.0

#: How long a fresh node gets to know its work types.
READY_TIMEOUT = 10.0


def small_payload(i: int) -> bytes:
    """The 12-byte stdin of the i-th throughput unit."""
    return b"unit %06d\n" % (i % 1_000_000)


def wait_finished(sock: str, ids: list[str], timeout: float = FINISH_TIMEOUT
                  ) -> tuple[float, list[str]]:
    """Polls `work list` (a new connection each time) until every unit of `ids` is finished,
    or until nothing more finished for `timeout` seconds; returns perf_counter() when the
    last unit was seen finished, and the units that never finished (stuck). Any unit that
    ended other than Succeeded is an error."""
    pending = set(ids)
    last_progress = time.perf_counter()
    while True:
        listing = control.work_list(sock)
        now = time.perf_counter()
        for unit in list(pending):
            st = listing.get(unit)
            if st is None:
                continue
            state = st.get("State")
            if state in (3, 4):
                raise control.ControlError(f"unit {unit} ended {st.get('StateName')}: "
                                           f"{st.get('Detail')!r}")
            if state == 2:
                pending.discard(unit)
                last_progress = now
        if not pending or now - last_progress > timeout:
            return last_progress, sorted(pending)
        time.sleep(FINISH_POLL_S)


def submit_when_ready(sock: str, target: str, worktype: str, data: bytes) -> str:
    """A first submit, retried for a few seconds while the node does not know the work type
    yet (Go receptor greets on its control socket before its work types are registered)."""
    deadline = time.perf_counter() + READY_TIMEOUT
    while True:
        try:
            return control.submit_json(sock, target, worktype, data)
        except control.ControlError as e:
            if "unknown work type" not in str(e) or time.perf_counter() > deadline:
                raise
            time.sleep(0.05)


def unit_throughput(where: str, worktype: str, concurrency: int
                    ) -> Callable[[Impl, Settings], dict]:
    """Units finished per second, as a client would see it: `throughput_units` small units
    (12-byte payload) submitted with the JSON form of `work submit`, a new control connection
    per unit, by `concurrency` submitters at once (each submits its next unit as soon as the
    previous one was accepted); the count stops when every unit is Succeeded (polled with
    `work list`). `where`: `local` (one node), `remote1` (submitted at A, runs on its peer B)
    or `remote2` (submitted at A, runs on C through B). Submission stops early after
    `throughput_budget_s`."""

    def run(impl: Impl, s: Settings) -> dict:
        if worktype == "echo" and not impl.has_echo_worktype:
            raise Skip("no echo-worktype plugin in Go receptor")
        if where == "local":
            node, target = single_node(impl), "localhost"
            nodes, sock, cleanup = [node], node.socket, node.remove
        else:
            line = Line(impl, b_work=where == "remote1")
            target = "B" if where == "remote1" else "C"
            nodes, sock, cleanup = line.nodes, line.a.socket, line.remove
        try:
            # Warm-up (not measured): the first unit to a remote node sets up what the
            # implementation keeps between units.
            for i in range(2):
                warm = [submit_when_ready(sock, target, worktype, small_payload(i))]
                if wait_finished(sock, warm)[1]:
                    raise control.ControlError(f"warm-up unit {warm[0]} never finished")
            meter = Meter(nodes)
            ids: list[str] = []
            submit_times: list[float] = []
            lock = threading.Lock()
            errors: list[BaseException] = []
            counter = iter(range(s.throughput_units))
            t0 = time.perf_counter()

            def submitter() -> None:
                try:
                    while time.perf_counter() - t0 <= s.throughput_budget_s:
                        with lock:
                            i = next(counter, None)
                        if i is None:
                            return
                        t = time.perf_counter()
                        unit = control.submit_json(sock, target, worktype, small_payload(i))
                        took = time.perf_counter() - t
                        with lock:
                            ids.append(unit)
                            submit_times.append(took)
                except BaseException as e:  # reported below
                    errors.append(e)

            threads = [threading.Thread(target=submitter) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            submitted_at = time.perf_counter()
            if errors:
                raise errors[0]
            done_at, stuck = wait_finished(sock, ids)
            resources = meter.stop()
        finally:
            cleanup()
        wall = done_at - t0
        finished = len(ids) - len(stuck)
        if not finished:
            raise control.ControlError(f"none of {len(ids)} units finished")
        return {"metrics": {
            # Rates count finished units; `stuck` ones never finished (the run waited
            # FINISH_TIMEOUT seconds without progress) and are left out.
            "units": finished,
            "stuck": len(stuck),
            "concurrency": concurrency,
            "wall_s": round(wall, 3),
            "units_per_s": round(finished / wall, 2),
            "submits_per_s": round(len(ids) / (submitted_at - t0), 2),
            "drain_ms": round(max(0.0, done_at - submitted_at) * 1000, 1),
            "submit_latency": latency_stats(submit_times),
            "cpu_ms_per_unit": round(resources["cpu_total_s"] * 1000 / finished, 3),
            "cpu_self_ms_per_unit": round(
                sum(n["cpu_self_s"] for n in resources["nodes"].values()) * 1000
                / finished, 3),
        }, "resources": resources}

    return run


# --- 4. results throughput ----------------------------------------------------------------

def _big_unit(sock: str, node: str, size: int, budget_s: float) -> dict:
    """Submits a `zeros` unit (`head -c size /dev/zero`) on `node` and streams its results
    through `sock`; MB/s over submit-to-last-byte. After `budget_s` the reading stops and the
    rate is that of the bytes received so far (`partial`)."""
    t0 = time.perf_counter()
    unit = control.submit(sock, node, "zeros", b"")
    res = control.results(sock, unit, keep=False, budget_s=budget_s - (time.perf_counter() - t0))
    if not res.partial and res.size != size:
        raise control.ControlError(f"unit {unit}: {res.size} result bytes instead of {size}")
    total = res.end_at - t0
    return {
        "bytes": res.size,
        "partial": res.partial,
        "seconds": round(total, 3),
        "mb_per_s": round(res.size / MB / total, 2),
        "first_byte_ms": round((res.first_byte_at - t0) * 1000, 1) if res.first_byte_at else None,
    }


def local_results(impl: Impl, s: Settings) -> dict:
    """One local unit producing `results_mb` MB, its results streamed by the same node."""
    size = s.results_mb * MB
    node = single_node(impl, zeros_bytes=size)
    try:
        meter = Meter([node])
        metrics = _big_unit(node.socket, "localhost", size, s.transfer_budget_s)
        return {"metrics": metrics, "resources": meter.stop()}
    finally:
        node.remove()


def _probe_remote(line: Line) -> None:
    """One small remote unit from A to C; Skip with the node's own words if that fails."""
    try:
        run_unit(line.a.socket, "C", "cat", 0, timeout=REMOTE_PROBE_TIMEOUT)
    except control.ControlError as e:
        raise Skip(f"remote work from A to C does not work: {e}") from e
    except socket.timeout as e:
        raise Skip(f"a remote unit from A to C gave no result in {REMOTE_PROBE_TIMEOUT:.0f}s") from e


def remote_results(impl: Impl, s: Settings) -> dict:
    """A unit on C producing `results_mb` MB, submitted and streamed at A through B."""
    size = s.results_mb * MB
    line = Line(impl, zeros_bytes=size)
    try:
        _probe_remote(line)
        meter = Meter(line.nodes)
        metrics = _big_unit(line.a.socket, "C", size, s.transfer_budget_s)
        return {"metrics": metrics, "resources": meter.stop()}
    finally:
        line.remove()


# --- 5. remote unit latency ---------------------------------------------------------------

def remote_latency(worktype: str) -> Callable[[Impl, Settings], dict]:
    """Small units on C submitted at A, each followed to the end of its results at A."""

    def run(impl: Impl, s: Settings) -> dict:
        if worktype == "echo" and not impl.has_echo_worktype:
            raise Skip("no echo-worktype plugin in Go receptor")
        line = Line(impl)
        try:
            _probe_remote(line)
            meter = Meter(line.nodes)
            samples, wall = bounded_loop(
                s.remote_runs, s.remote_budget_s,
                lambda i: run_unit(line.a.socket, "C", worktype, i))
            resources = meter.stop()
        finally:
            line.remove()
        stats = latency_stats(samples)
        return {"metrics": {
            "units": len(samples),
            "units_per_s": round(len(samples) / wall, 2),
            "latency": stats,
            # Stalls: the slowest unit against the median (the mission wants <= 10).
            "worst_over_median": round(stats["max_ms"] / stats["median_ms"], 2)
            if stats["median_ms"] else None,
        }, "resources": resources}

    return run


# --- raw streams over the mesh ------------------------------------------------------------

class Sink:
    """A TCP server on 127.0.0.1 that takes one connection and counts what arrives, noting
    when the latest bytes arrived."""

    def __init__(self):
        self.received = 0
        self.last_at: float | None = None
        self.error: BaseException | None = None
        self.accepted = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(SINK_ACCEPT_TIMEOUT + STREAM_IDLE_TIMEOUT)
            conn, _ = self.listener.accept()
            self.accepted.set()
            with conn:
                conn.settimeout(STREAM_IDLE_TIMEOUT)
                view = memoryview(bytearray(BLOCK))
                while True:
                    n = conn.recv_into(view)
                    if n == 0:
                        break
                    self.received += n
                    self.last_at = time.perf_counter()
        except BaseException as e:  # reported by wait_for()
            self.error = e
        finally:
            self.listener.close()

    def wait_for(self, count: int) -> float:
        """Waits (polling; fails once nothing arrives for STREAM_IDLE_TIMEOUT) until `count`
        bytes arrived; returns when the last of them did."""
        seen, deadline = self.received, time.monotonic() + STREAM_IDLE_TIMEOUT
        while self.received < count:
            if self.received != seen:
                seen, deadline = self.received, time.monotonic() + STREAM_IDLE_TIMEOUT
            if self.error is not None or not self.thread.is_alive() or time.monotonic() > deadline:
                raise control.ControlError(
                    f"sink got {self.received} of {count} bytes ({self.error or 'stream ended'})")
            time.sleep(0.005)
        assert self.last_at is not None
        return self.last_at


def _send(sock: socket.socket, size: int, sink: Sink, budget_s: float) -> dict:
    """Sends `size` bytes (fewer if `budget_s` runs out: `partial`); MB/s from the first byte
    sent to the last byte at the sink."""
    block = bytes(BLOCK)
    sock.settimeout(STREAM_IDLE_TIMEOUT)
    t0 = time.perf_counter()
    sent = 0
    while sent < size and time.perf_counter() - t0 < budget_s:
        n = min(BLOCK, size - sent)
        sock.sendall(block if n == BLOCK else block[:n])
        sent += n
        if sent == n and not sink.accepted.wait(SINK_ACCEPT_TIMEOUT):
            raise Skip(f"no connection reached the sink on C within {SINK_ACCEPT_TIMEOUT:.0f}s "
                       "(tcp-client proxy missing?)")
    total = sink.wait_for(sent) - t0
    return {"bytes": sent, "partial": sent < size, "seconds": round(total, 3),
            "mb_per_s": round(sent / MB / total, 2)}


def stream(via: str) -> Callable[[Impl, Settings], dict]:
    """`stream_mb` MB from A to a TCP sink behind C, through B. `via`: `tcp-server` (a
    tcp-server proxy on A, a tcp-client proxy on C) or `connect` (the control command
    `connect C sink` on A, the same tcp-client proxy on C)."""

    def run(impl: Impl, s: Settings) -> dict:
        size = s.stream_mb * MB
        sink = Sink()
        a_port = free_port()
        a_extra = [("tcp-server", {"port": a_port, "bindaddr": "127.0.0.1",
                                   "remotenode": "C", "remoteservice": SINK_SERVICE})]
        c_extra = [("tcp-client", {"service": SINK_SERVICE, "address": f"127.0.0.1:{sink.port}"})]
        line = Line(impl, a_extra=a_extra if via == "tcp-server" else [], c_extra=c_extra)
        try:
            meter = Meter(line.nodes)
            if via == "tcp-server":
                metrics = _via_tcp_server(a_port, size, sink, s.transfer_budget_s)
            else:
                metrics = _via_connect(line.a.socket, size, sink, s.transfer_budget_s)
            return {"metrics": metrics, "resources": meter.stop()}
        finally:
            line.remove()

    return run


def _via_tcp_server(port: int, size: int, sink: Sink, budget_s: float) -> dict:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError as e:
        raise Skip("nothing listens on A's tcp-server port (tcp-server proxy missing?)") from e
    with sock:
        return _send(sock, size, sink, budget_s)


def _via_connect(path: str, size: int, sink: Sink, budget_s: float) -> dict:
    with control.Control(path) as ctl:
        ctl.sock.sendall(f"connect C {SINK_SERVICE}\n".encode())
        line = ctl.read_line()
        if line != b"Connecting":
            raise Skip(f"`connect C {SINK_SERVICE}` answered {line.decode(errors='replace')!r}")
        return _send(ctl.sock, size, sink, budget_s)


# --- isolated plugins: the cost of a plugin host process -----------------------------------

#: The libraries of the work types the isolation workload runs, by work type.
ISOLATED_LIBS = {"cat": "libreceptor_command.so", "echo": "libreceptor_echo.so"}


def isolation(impl: Impl, s: Settings) -> dict:
    """The same work types in-process and isolated (`isolation: process`), in this run, one
    node after the other: sequential small units of `cat` (work-command) and `echo` (units/s,
    latency), and one `zeros` unit of `results_mb` MB (results MB/s). Go receptor has no
    plugins: ours only."""
    if impl.name != "rust":
        raise Skip("no plugin isolation in Go receptor")
    size = s.results_mb * MB
    metrics: dict = {}
    resources: dict = {}
    for mode, libs in (("in_process", ()), ("isolated", tuple(ISOLATED_LIBS.values()))):
        node = single_node(impl, zeros_bytes=size, isolated=libs)
        try:
            meter = Meter([node])
            for worktype in ISOLATED_LIBS:
                for i in range(3):  # warm-up, not measured
                    run_unit(node.socket, "localhost", worktype, i)
                samples, wall = bounded_loop(
                    s.units, s.unit_budget_s,
                    lambda i, w=worktype: run_unit(node.socket, "localhost", w, i))
                metrics[f"{worktype}_{mode}_units_per_s"] = round(len(samples) / wall, 2)
                metrics[f"{worktype}_{mode}_latency"] = latency_stats(samples)
            big = _big_unit(node.socket, "localhost", size, s.transfer_budget_s)
            metrics[f"results_{mode}_mb_per_s"] = big["mb_per_s"]
            metrics[f"results_{mode}_partial"] = big["partial"]
            resources[mode] = meter.stop()
        finally:
            node.remove()
    for name, key in (("cat", "cat_{}_units_per_s"), ("echo", "echo_{}_units_per_s"),
                      ("results", "results_{}_mb_per_s")):
        inproc, iso = metrics[key.format("in_process")], metrics[key.format("isolated")]
        metrics[f"{name}_isolated_over_in_process"] = round(iso / inproc, 3) if inproc else None
    return {"metrics": metrics, "resources": resources}