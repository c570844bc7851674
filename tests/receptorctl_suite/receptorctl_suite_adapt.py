"""Adaptation layer that runs receptorctl 1.6.9's own test suite on any machine.

The suite ships in receptorctl's source distribution (``tests/``) and was written for one
developer machine: fixed temp paths (/tmp/receptorctltest, and Go receptor's default data
folder /tmp/receptor, which its teardown deletes), fixed ports, a ``receptor`` binary looked
up on PATH, and a teardown that runs ``killall receptor``. ``run.py`` copies the pristine
suite, applies ``conftest.patch`` (which calls the functions below) and runs pytest with this
module loaded as a plugin (``-p receptorctl_suite_adapt``).

The plugin part marks the tests that are expected to fail against our receptor for now
(EXPECTED_FAILURES, the one place to flip once the features land) and writes a JSON summary
of the outcomes for the end-to-end test that drives the run.

Environment (set by run.py):
  RECEPTORCTL_SUITE_TMP       replaces /tmp/receptorctltest (must not exist yet)
  RECEPTORCTL_SUITE_RECEPTOR  the receptor binary the nodes run
  RECEPTORCTL_SUITE_PORTS     JSON object: suite port -> port to use instead
  RECEPTORCTL_SUITE_IMPL      "go" or "rust": which expected-failure list applies
  RECEPTORCTL_SUITE_SUMMARY   optional: where to write the JSON summary
"""

import json
import os
import re
import time

import pytest
import yaml

ENV_TMP = "RECEPTORCTL_SUITE_TMP"
ENV_RECEPTOR = "RECEPTORCTL_SUITE_RECEPTOR"
ENV_PORTS = "RECEPTORCTL_SUITE_PORTS"
ENV_IMPL = "RECEPTORCTL_SUITE_IMPL"
ENV_SUMMARY = "RECEPTORCTL_SUITE_SUMMARY"

# What the pristine suite hard-codes.
SUITE_TMP = "/tmp/receptorctltest"
SUITE_PORTS = (11111, 11112, 11113, 11121, 12111, 12121)
# Receptor's own data folder: Go's default is /tmp/receptor (shared by every node on the
# machine); the suite's nodes get one under the run's temp folder instead.
DATADIR_NAME = "receptor"
LOOPBACK = "127.0.0.1"
# How long a started node may take to create its control sockets (see started()).
STARTUP_DEADLINE = 30.0

# Tests that fail against our receptor until the named feature lands (node ids as pytest
# prints them). They run as strict xfail: once one passes, the run fails with XPASS(strict)
# so that its entry gets removed here.
_REMOTE_WORK = (
    "remote work is not wired into the daemon yet (core/src/work/remote exists, but the "
    "node's work command has no RemoteWork): `work submit` to another node answers "
    "'ERROR: cannot submit work to node ...: remote work is not available on this node'"
)
EXPECTED_FAILURES = {
    "rust": {
        "tests/test_cli.py::TestCLI::test_cmd_work_results_successful": _REMOTE_WORK,
        "tests/test_mesh.py::TestMeshFirewall::test_work_unsigned": _REMOTE_WORK,
        "tests/test_workunit.py::TestWorkUnit::test_workunit_simple": _REMOTE_WORK,
        "tests/test_workunit.py::TestWorkUnit::test_workunit_cmd_cancel": _REMOTE_WORK,
    },
}


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set (run the suite with tests/receptorctl_suite/run.py)")
    return value


def base_tmp_dir():
    """The folder that replaces /tmp/receptorctltest."""
    return _env(ENV_TMP)


def receptor_bin_path():
    """The receptor binary the nodes run."""
    path = _env(ENV_RECEPTOR)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{ENV_RECEPTOR}={path} is not an executable")
    return path


def _port_map():
    ports = {int(k): int(v) for k, v in json.loads(_env(ENV_PORTS)).items()}
    missing = [p for p in SUITE_PORTS if p not in ports]
    if missing:
        raise RuntimeError(f"{ENV_PORTS} has no replacement for ports {missing}")
    return ports


def port(suite_port):
    """The port that replaces one of the suite's fixed ports."""
    return _port_map()[suite_port]


def render_config(config_file, mesh_tmp_dir):
    """Writes the machine-adapted copy of one of the suite's node configs; returns its path.

    Only places and addresses change: /tmp/receptorctltest becomes the run's temp folder, the
    fixed ports become the run's ports, the node's data folder moves from Go's default
    /tmp/receptor into the run's temp folder, and listeners bind to 127.0.0.1 instead of
    every interface. Everything else (ids, peers, services, TLS, work types) is kept.
    """
    with open(config_file) as f:
        text = f.read()
    text = text.replace(SUITE_TMP, base_tmp_dir())
    ports = _port_map()
    alternatives = "|".join(str(p) for p in SUITE_PORTS)
    text = re.sub(rf"(?<!\d)({alternatives})(?!\d)", lambda m: str(ports[int(m.group(1))]), text)
    entries = yaml.safe_load(text)
    for entry in entries:
        for kind, options in entry.items():
            _adapt_entry(kind, options)
    out = os.path.join(mesh_tmp_dir, os.path.basename(config_file))
    with open(out, "w") as f:
        yaml.safe_dump(entries, f, sort_keys=False)
    return out


def _adapt_entry(kind, options):
    if not isinstance(options, dict):
        return
    if kind == "node":
        options.setdefault("datadir", os.path.join(base_tmp_dir(), DATADIR_NAME))
    elif kind in ("tcp-listener", "tcp-server"):
        options.setdefault("bindaddr", LOOPBACK)
    elif kind == "control-service" and "tcplisten" in options:
        listen = str(options["tcplisten"])
        if ":" not in listen:
            options["tcplisten"] = f"{LOOPBACK}:{listen}"


_started_nodes = []


def started(process):
    """Records a node process the suite started, so that it can be stopped by its id, and
    waits until the node has created the control sockets of its config.

    The suite sleeps 0.5 s after starting the nodes and then needs node1's control socket
    to exist (only the mesh check after that is retried); a freshly built debug binary on
    a loaded CI machine can take longer than that to start. A node that exits, or has no
    socket after STARTUP_DEADLINE, is left to the suite's own check to report.
    """
    _started_nodes.append(process)
    sockets = _control_sockets(process.args[2])
    deadline = time.monotonic() + STARTUP_DEADLINE
    while process.poll() is None and time.monotonic() < deadline:
        if all(os.path.exists(path) for path in sockets):
            break
        time.sleep(0.02)
    return process


def _control_sockets(config_file):
    with open(config_file) as f:
        entries = yaml.safe_load(f)
    return [
        options["filename"]
        for entry in entries
        for kind, options in entry.items()
        if kind == "control-service" and isinstance(options, dict) and options.get("filename")
    ]


def stop_started_nodes():
    """Kills every node this session started that still runs (replaces `killall receptor`)."""
    for process in _started_nodes:
        if process.poll() is None:
            process.kill()
    for process in _started_nodes:
        process.wait(10)


# --- pytest plugin -------------------------------------------------------------------------


def _expected_failures():
    impl = os.environ.get(ENV_IMPL, "")
    if impl not in ("go", "rust"):
        raise pytest.UsageError(f"{ENV_IMPL} must be go or rust, not {impl!r}")
    return EXPECTED_FAILURES.get(impl, {})


def pytest_collection_modifyitems(config, items):
    expected = _expected_failures()
    collected = {item.nodeid for item in items}
    collected_files = {nodeid.split("::", 1)[0] for nodeid in collected}
    stale = [
        nodeid
        for nodeid in expected
        if nodeid.split("::", 1)[0] in collected_files and nodeid not in collected
    ]
    if stale:
        raise pytest.UsageError(f"EXPECTED_FAILURES names tests that do not exist: {stale}")
    for item in items:
        reason = expected.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


_outcomes = {}


def pytest_runtest_logreport(report):
    previous = _outcomes.get(report.nodeid)
    if report.failed:
        outcome = "failed" if report.when == "call" else "error"
    elif hasattr(report, "wasxfail"):
        outcome = "xfailed"
    elif report.skipped:
        outcome = "skipped"
    elif report.when == "call":
        outcome = "passed"
    else:
        return
    # The first failure of a test (setup, call or teardown) is what counts.
    if previous in ("failed", "error"):
        return
    _outcomes[report.nodeid] = outcome


def pytest_sessionfinish(session, exitstatus):
    ran = [n for n, o in _outcomes.items() if o != "skipped"]
    path = os.environ.get(ENV_SUMMARY)
    if path:
        summary = {"exitstatus": int(exitstatus), "outcomes": _outcomes}
        with open(path, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
    if exitstatus == 0 and not ran:
        # Everything skipped: that is no evidence of anything.
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
