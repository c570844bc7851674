"""One receptor process run by the benchmark, and what /proc says about it.

Each node gets its own temp folder with its config (`receptor.yaml`, the YAML list form both
implementations read with `--config`), its data folder, its control socket and its log. The
process runs in a process group of its own; `stop()` kills it and every process descended
from it (Go receptor starts each work unit's runner in a new session, so the group alone is
not enough), by process id only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from . import control

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20

#: How long a node gets from spawn to greeting.
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_entry(key: str, value) -> str:
    """`- key:` followed by the map's items in block style; values written as JSON (YAML flow)."""
    if isinstance(value, dict) and value:
        lines = [f"- {key}:"]
        lines += [f"    {k}: {json.dumps(v)}" for k, v in value.items()]
        return "\n".join(lines) + "\n"
    return f"- {key}: {json.dumps(value)}\n"


@dataclass
class Usage:
    """CPU seconds and memory of one process at one moment."""

    #: user+sys seconds of the process itself.
    cpu_self: float
    #: user+sys seconds of its children that it has reaped (work-unit runners, commands).
    cpu_children: float
    #: resident set size now, bytes.
    rss: int
    #: peak resident set size since start (or since the last peak reset), bytes.
    peak_rss: int
    #: the part of `rss` that is anonymous memory (heap, stacks), bytes.
    rss_anon: int = 0
    #: the part of `rss` that is mapped files (the binary, shared libraries, plugins), bytes.
    rss_file: int = 0


def read_usage(pid: int) -> Usage:
    """Reads /proc/<pid>/stat (utime, stime, cutime, cstime) and /proc/<pid>/status."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the parenthesised command name; utime is field 14 of stat(5).
        fields = f.read().rsplit(") ", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    mem = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                mem[key] = int(rest.split()[0]) * 1024
    return Usage(
        cpu_self=(utime + stime) / CLOCK_TICKS,
        cpu_children=(cutime + cstime) / CLOCK_TICKS,
        rss=mem.get("VmRSS", 0),
        peak_rss=mem.get("VmHWM", 0),
        rss_anon=mem.get("RssAnon", 0),
        rss_file=mem.get("RssFile", 0),
    )


def reset_peak_rss(pid: int) -> bool:
    """Resets the process's peak RSS (VmHWM) to its current RSS; False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def children(parent: int) -> list[int]:
    """The running children of `parent`, read from /proc."""
    out: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(") ", 1)[1].split()[1]) == parent:
                    out.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(root: int) -> list[int]:
    """Every process descended from `root`, parents first, read from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    frontier = [root]
    while frontier:
        for pid in children.get(frontier.pop(), []):
            if pid not in out:
                out.append(pid)
                frontier.append(pid)
    return out


class Node:
    """A receptor node: `Node(impl, binary, node_id, entries)` then `start()`."""

    def __init__(self, impl: str, binary: str, node_id: str, entries: list[tuple[str, object]],
                 env: dict[str, str] | None = None):
        self.impl = impl
        self.binary = binary
        self.node_id = node_id
        self.entries = entries
        self.env = env
        self.dir = tempfile.mkdtemp(prefix=f"rbench-{impl}-{node_id}-")
        self.socket = os.path.join(self.dir, "control.sock")
        self.datadir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "node.log")
        self.proc: subprocess.Popen | None = None
        #: Seconds from spawn to greeting of the last start.
        self.startup_s: float | None = None
        os.makedirs(self.datadir)
        with open(os.path.join(self.dir, "receptor.yaml"), "w") as f:
            f.write(self.config_text())

    def config_text(self) -> str:
        text = yaml_entry("node", {"id": self.node_id, "datadir": self.datadir})
        text += yaml_entry("log-level", "error")
        text += yaml_entry("control-service", {"service": "control", "filename": self.socket})
        for key, value in self.entries:
            text += yaml_entry(key, value)
        return text

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> float:
        """Starts the process and waits for the greeting with a tight connect loop; returns the
        seconds from just before the spawn to the greeting."""
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        log = open(self.log_path, "ab")
        env = dict(os.environ, **(self.env or {}))
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.binary, "--config", os.path.join(self.dir, "receptor.yaml")],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, env=env,
        )
        log.close()
        try:
            t1 = control.wait_greeting(self.socket, t0 + START_TIMEOUT, self.alive)
        except control.ControlError as e:
            raise control.ControlError(f"{self.impl} node {self.node_id}: {e}\n{self.log_tail()}") from e
        self.startup_s = t1 - t0
        return self.startup_s

    def usage(self) -> Usage:
        """The node's usage; `cpu_children` also counts its children that still run (their own
        CPU and their reaped children's), such as our command spawner, which forks the
        work-unit runners and lives as long as the node."""
        usage = read_usage(self.pid)
        for child in children(self.pid):
            try:
                live = read_usage(child)
            except OSError:
                continue
            usage.cpu_children += live.cpu_self + live.cpu_children
        return usage

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Kills the node and everything it started: freeze the tree, then SIGKILL it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            pid = self.proc.pid
            _signal(pid, signal.SIGSTOP)
            stopped: list[int] = []
            for _ in range(16):
                new = [p for p in descendants(pid) if p not in stopped]
                if not new:
                    break
                for p in new:
                    _signal(p, signal.SIGSTOP)
                    stopped.append(p)
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            for p in stopped:
                _signal(p, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        """Stops the node and deletes its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
