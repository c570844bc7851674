#!/usr/bin/env python3
"""Runs receptorctl 1.6.9's own test suite (from its sdist) against a receptor binary.

    usage: run.py --receptor BIN --impl {go,rust} [options] [-- pytest arguments]

Steps: copy the pristine suite (RECEPTORCTL_TESTS_DIR, never modified) into a fresh work
folder, apply conftest.patch (strictly, no fuzz), pick ports, then run pytest from the copy
with receptorctl_suite_adapt loaded as a plugin. Pytest arguments default to `tests`; pass
e.g. `-- tests/test_cli.py` to run one module.

Every process started below this one is stopped by its process id when the run ends: this
process is a child subreaper (Go receptor starts work-unit runners in their own session, so
killing a node orphans them; as orphans they become our children, and are killed and reaped
here). The exit status is pytest's (non-zero also when no test ran), or 124 on timeout or
SIGTERM.

Ports: RECEPTORCTL_SUITE_PORTS (JSON object, suite port -> port) when set, as the end-to-end
test passes ports that no parallel test can be given; else free ports picked here.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import receptorctl_suite_adapt as adapt  # noqa: E402

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
TIMEOUT_EXIT = 124


def log(message):
    print(f"receptorctl-suite: {message}", file=sys.stderr, flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--receptor", required=True, help="receptor binary the nodes run")
    parser.add_argument("--impl", required=True, choices=["go", "rust"])
    parser.add_argument(
        "--tests-dir",
        default=os.environ.get("RECEPTORCTL_TESTS_DIR"),
        help="the sdist's pristine tests/ folder (default: $RECEPTORCTL_TESTS_DIR)",
    )
    parser.add_argument("--work-dir", help="folder to create and run in (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    parser.add_argument("--summary", help="write the JSON outcome summary here")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for pytest")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args()
    if not args.tests_dir:
        parser.error("--tests-dir or RECEPTORCTL_TESTS_DIR is required")
    return args


def become_subreaper():
    """Orphans of our descendants become our children; SIGTERM (also sent when our parent
    dies) ends the run through the normal cleanup."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
    signal.signal(signal.SIGTERM, on_sigterm)


class Terminated(Exception):
    pass


def on_sigterm(signum, frame):
    raise Terminated()


def prepare_suite(tests_dir, suite_root):
    """Copies the pristine suite to suite_root/tests and applies conftest.patch."""
    if not os.path.isfile(os.path.join(tests_dir, "conftest.py")):
        sys.exit(f"receptorctl-suite: {tests_dir} is not receptorctl's tests folder")
    shutil.copytree(tests_dir, os.path.join(suite_root, "tests"))
    patch = os.path.join(HERE, "conftest.patch")
    subprocess.run(
        ["patch", "-p1", "--fuzz=0", "--no-backup-if-mismatch", "--quiet", "-d", suite_root, "-i", patch],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def pick_ports():
    if os.environ.get(adapt.ENV_PORTS):
        return os.environ[adapt.ENV_PORTS]
    sockets = []
    try:
        for _ in adapt.SUITE_PORTS:
            s = socket.socket()
            s.bind((adapt.LOOPBACK, 0))
            sockets.append(s)
        return json.dumps({p: s.getsockname()[1] for p, s in zip(adapt.SUITE_PORTS, sockets)})
    finally:
        for s in sockets:
            s.close()


def children():
    """Process ids whose parent is this process."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; ppid is the 2nd field after it.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            found.append(int(entry))
    return found


def reap_exited():
    """Reaps children that already exited (orphans that finished while pytest ran)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_descendants():
    """Kills and reaps every remaining child (orphans of descendants included), by pid."""
    for _ in range(50):
        reap_exited()
        left = children()
        if not left:
            return
        log(f"stopping leftover processes {left}")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in left:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    log(f"processes still left: {children()}")


def main():
    args = parse_args()
    receptor = os.path.abspath(args.receptor)
    become_subreaper()
    if args.work_dir:
        work = os.path.abspath(args.work_dir)
        os.makedirs(work)
    else:
        # Short: unix socket paths under it must stay below 108 bytes.
        work = tempfile.mkdtemp(prefix="rctl-suite-", dir="/tmp")
    suite_root = os.path.join(work, "suite")
    os.makedirs(suite_root)
    prepare_suite(args.tests_dir, suite_root)

    env = dict(os.environ)
    env[adapt.ENV_TMP] = os.path.join(work, "tmp")
    env[adapt.ENV_RECEPTOR] = receptor
    env[adapt.ENV_PORTS] = pick_ports()
    env[adapt.ENV_IMPL] = args.impl
    if args.summary:
        env[adapt.ENV_SUMMARY] = os.path.abspath(args.summary)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "receptorctl_suite_adapt",
        "-p",
        "no:cacheprovider",
        "-ra",
        "-v",
    ] + (args.pytest_args or ["tests"])
    log(f"receptor {receptor} ({args.impl}), work folder {work}, ports {env[adapt.ENV_PORTS]}")
    pytest = subprocess.Popen(command, cwd=suite_root, env=env, stdin=subprocess.DEVNULL)
    try:
        status = pytest.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        log(f"pytest did not finish within {args.timeout} s")
        status = TIMEOUT_EXIT
    except Terminated:
        log("terminated")
        status = TIMEOUT_EXIT
    finally:
        # pytest and the nodes are our descendants: kill whatever is left, by pid.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_descendants()
    if args.keep or status != 0:
        log(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
