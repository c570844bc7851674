"""Fails CI unless the end-to-end scenarios really ran and passed.

Reads the JUnit report of the nextest `ci` profile. Each scenario module listed below must have
at least one test that was executed and passed in the `receptor-tests::e2e` binary: a filter,
an `#[ignore]` or a harness change cannot quietly turn the interop tests into no tests.
Silent on success, so that nextest's summary stays the last thing CI prints.

    usage: python3 .ci/check-ran.py <junit.xml>
"""

import sys
import xml.etree.ElementTree as ET

E2E_SUITE = "receptor-tests::e2e"
REQUIRED_MODULES = [
    "harness",
    "mesh_line",
    "ping_traceroute",
    "routed_traffic",
    "receptorctl_cli",
    "python_api",
    "receptorctl_suite",
    "backends_udp",
    "backends_ws",
    "firewall",
    "tls_mesh",
    "tls_refusals",
    "streams_connect",
    "streams_failure",
    "streams_tcp",
    "streams_tls",
    "streams_udp",
    "streams_unix",
    "workceptor_guide",
    "quick_start",
    "logs_json",
    "package",
    "unprovided_kinds",
    "command_service",
    "ip_router",
    "metrics",
    "topology_graph",
    "mesh_page",
]


def main(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"check-ran: cannot read the nextest JUnit report {path}: {e}", file=sys.stderr)
        return 1
    passed = set()
    for suite in root.iter("testsuite"):
        if suite.get("name") != E2E_SUITE:
            continue
        for case in suite.iter("testcase"):
            if any(case.find(tag) is not None for tag in ("failure", "error", "skipped")):
                continue
            passed.add(case.get("name", "").split("::", 1)[0])
    missing = [m for m in REQUIRED_MODULES if m not in passed]
    if missing:
        print(
            "check-ran: no passing end-to-end test ran in: " + ", ".join(missing),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
