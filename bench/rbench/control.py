"""The receptor control protocol, spoken directly on a unix socket.

A session starts with the node's greeting `Receptor Control, node <id>\\n`; each command is
one line and gets one reply line (compact JSON, or `ERROR: <message>`), except the
streaming commands used here:

* `work submit <node> <worktype>`: the node answers `Work unit created with ID <id>. ...`,
  the client sends the unit's stdin and half-closes its side, the node replies with one
  JSON line (`{"result":"Job Started","unitid":...}`) or `ERROR: ...`, then closes.
* `work results <id>`: the node answers `Streaming results for work unit <id>` and streams
  the unit's stdout. When the client half-closed right after the command (as receptorctl
  does), the node closes the connection once the unit is complete and everything was sent,
  so the end of the results is the end of the connection.

The client reads with large buffers and never keeps result bytes it is not asked to check,
so it is not what limits a measurement.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

GREETING_PREFIX = b"Receptor Control, node "
SUBMIT_PREFIX = b"Work unit created with ID "
RESULTS_PREFIX = b"Streaming results for work unit "

#: Receive buffer for large result streams.
CHUNK = 1 << 20

#: Socket timeout for every blocking call, so that a stuck node fails the workload instead of
#: hanging the run.
DEFAULT_TIMEOUT = 120.0


class ControlError(Exception):
    """The node answered `ERROR: ...`, closed early or said something unexpected."""


class Control:
    """One control session on a unix socket (greeting already read)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self._buf = bytearray()
        try:
            self.sock.connect(path)
            greeting = self.read_line()
        except BaseException:
            self.sock.close()
            raise
        if not greeting.startswith(GREETING_PREFIX):
            self.sock.close()
            raise ControlError(f"unexpected greeting {greeting!r}")
        self.node_id = greeting[len(GREETING_PREFIX) :].decode()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Control":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_line(self) -> bytes:
        """The next line without its newline; ControlError if the node closes first."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            data = self.sock.recv(65536)
            if not data:
                raise ControlError(f"connection closed before a full line ({bytes(self._buf)!r})")
            self._buf += data

    def command(self, line: str) -> dict:
        """Sends one command and parses its JSON reply."""
        self.sock.sendall(line.encode() + b"\n")
        return parse_reply(self.read_line())

    def read_to_eof(self, keep: bool = True, deadline: float | None = None) -> "Results":
        """Everything left until the node closes, or until perf_counter() passes `deadline`
        (then `partial`). With `keep=False` the bytes are only counted."""
        out = bytearray(self._buf) if keep else None
        total = len(self._buf)
        first = time.perf_counter() if total else None
        self._buf.clear()
        # Small reads for small results that are kept, large ones for big streams counted.
        view = memoryview(bytearray(65536 if keep else CHUNK))
        while True:
            n = self.sock.recv_into(view)
            now = time.perf_counter()
            if n == 0:
                return Results(total, None if out is None else bytes(out), first, now, False)
            if first is None:
                first = now
            total += n
            if out is not None:
                out += view[:n]
            if deadline is not None and now > deadline:
                return Results(total, None if out is None else bytes(out), first, now, True)


def parse_reply(line: bytes) -> dict:
    """A command's reply line as JSON; ControlError for `ERROR: ...`."""
    if line.startswith(b"ERROR: "):
        raise ControlError(line[len(b"ERROR: ") :].decode(errors="replace"))
    try:
        return json.loads(line)
    except ValueError as e:
        raise ControlError(f"reply is not JSON: {line[:200]!r}") from e


def command(path: str, line: str) -> dict:
    """Runs one command on a fresh session."""
    with Control(path) as ctl:
        return ctl.command(line)


def submit(path: str, node: str, worktype: str, payload: bytes,
           timeout: float = DEFAULT_TIMEOUT) -> str:
    """`work submit <node> <worktype>` with `payload` as stdin; returns the unit id.

    Waits for the `Work unit created` line before sending the payload (as receptorctl does),
    half-closes, and reads the final reply.
    """
    with Control(path, timeout) as ctl:
        ctl.sock.sendall(f"work submit {node} {worktype}\n".encode())
        line = ctl.read_line()
        if not line.startswith(SUBMIT_PREFIX):
            parse_reply(line)  # raises with the node's error
            raise ControlError(f"unexpected submit answer {line!r}")
        unit_id = line[len(SUBMIT_PREFIX) :].split(b".", 1)[0].decode()
        if payload:
            ctl.sock.sendall(payload)
        ctl.sock.shutdown(socket.SHUT_WR)
        reply = parse_reply(ctl.read_line())
    if reply.get("unitid") != unit_id or reply.get("result") not in ("Job Started", "Job Submitted"):
        raise ControlError(f"unexpected submit reply {reply!r}")
    return unit_id


def submit_json(path: str, node: str, worktype: str, payload: bytes,
                timeout: float = DEFAULT_TIMEOUT) -> str:
    """`work submit` in the JSON form, as a client library would send it, on a new
    connection: `{"command":"work","subcommand":"submit","node":..,"worktype":..}`, then the
    payload once the `Work unit created` line came, a half-close and the final reply.
    Returns the unit id."""
    line = json.dumps({"command": "work", "subcommand": "submit", "node": node,
                       "worktype": worktype}, separators=(",", ":"))
    with Control(path, timeout) as ctl:
        ctl.sock.sendall(line.encode() + b"\n")
        created = ctl.read_line()
        if not created.startswith(SUBMIT_PREFIX):
            parse_reply(created)
            raise ControlError(f"unexpected submit answer {created!r}")
        unit_id = created[len(SUBMIT_PREFIX) :].split(b".", 1)[0].decode()
        if payload:
            ctl.sock.sendall(payload)
        ctl.sock.shutdown(socket.SHUT_WR)
        reply = parse_reply(ctl.read_line())
    if reply.get("unitid") != unit_id or reply.get("result") not in ("Job Started", "Job Submitted"):
        raise ControlError(f"unexpected submit reply {reply!r}")
    return unit_id


def work_list(path: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """`work list` in the JSON form on a new connection: unit id -> status object."""
    return command(path, '{"command":"work","subcommand":"list"}')


@dataclass
class Results:
    """What `work results` delivered."""

    size: int
    data: bytes | None
    #: perf_counter() when the first result byte arrived (None for empty results).
    first_byte_at: float | None
    #: perf_counter() when the node closed the stream (or the reading stopped).
    end_at: float
    #: True if the reading stopped at the deadline, before the end of the results.
    partial: bool = False


def results(path: str, unit_id: str, keep: bool = True,
            timeout: float = DEFAULT_TIMEOUT, budget_s: float | None = None) -> Results:
    """Streams a unit's results to their end (the node closes after the unit is complete).

    With `keep=False` the bytes are only counted (for large results). `timeout` bounds each
    wait for data; `budget_s` (from the call) the whole stream, which then ends `partial`.
    """
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    with Control(path, timeout) as ctl:
        ctl.sock.sendall(f"work results {unit_id}\n".encode())
        ctl.sock.shutdown(socket.SHUT_WR)
        header = ctl.read_line()
        if not header.startswith(RESULTS_PREFIX):
            parse_reply(header)
            raise ControlError(f"unexpected results answer {header!r}")
        return ctl.read_to_eof(keep, deadline)


def wait_greeting(path: str, deadline: float, alive) -> float:
    """Connects in a tight loop (no sleeps, only a yield of the CPU between attempts) until the
    greeting arrives; returns perf_counter() at that moment.

    `alive()` is checked on every failed attempt so a node that died is reported at once.
    """
    while True:
        try:
            with Control(path, timeout=10.0):
                return time.perf_counter()
        except (OSError, ControlError):
            # Not listening yet (no socket file, refused), or reset while starting up.
            if not alive():
                raise ControlError("the node exited before greeting")
            if time.perf_counter() > deadline:
                raise ControlError(f"no greeting on {path} in time")
            os.sched_yield()
