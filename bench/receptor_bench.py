#!/usr/bin/env python3
"""Runs every workload on the reference Go receptor and on ours, one after the other in the
same run, prints the comparison tables and writes the results as JSON.

Usually started through `bench/run.sh`, which builds our release binary and finds the
reference one. See bench/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rbench import report, scale, workloads  # noqa: E402
from rbench.topology import Impl  # noqa: E402
from rbench.workloads import Settings, Skip  # noqa: E402

#: name -> (title, function), in the order they run.
WORKLOADS = {
    "startup_idle": ("1. start to greeting, idle RSS", workloads.startup_idle),
    "local_units_cat": ("2+3. local units (work-command cat)", workloads.local_units("cat")),
    "local_units_echo": ("2+3. local units (echo-worktype)", workloads.local_units("echo")),
    "submit_rate": ("2b. submits without results (cat)", workloads.submit_rate("cat")),
    "submit_rate_echo": ("2b. submits without results (echo-worktype)",
                         workloads.submit_rate("echo")),
    "units_local_cat": ("2c. units/s, local cat, sequential",
                        workloads.unit_throughput("local", "cat", 1)),
    "units_local_cat_8": ("2c. units/s, local cat, 8 submitters",
                          workloads.unit_throughput("local", "cat", 8)),
    "units_local_echo": ("2c. units/s, local echo, sequential",
                         workloads.unit_throughput("local", "echo", 1)),
    "units_local_echo_8": ("2c. units/s, local echo, 8 submitters",
                           workloads.unit_throughput("local", "echo", 8)),
    "units_remote1": ("2d. units/s, cat 1 hop away, sequential",
                      workloads.unit_throughput("remote1", "cat", 1)),
    "units_remote1_8": ("2d. units/s, cat 1 hop away, 8 submitters",
                        workloads.unit_throughput("remote1", "cat", 8)),
    "units_remote2": ("2d. units/s, cat 2 hops away, sequential",
                      workloads.unit_throughput("remote2", "cat", 1)),
    "units_remote2_8": ("2d. units/s, cat 2 hops away, 8 submitters",
                        workloads.unit_throughput("remote2", "cat", 8)),
    "local_results": ("4a. results of a local unit", workloads.local_results),
    "remote_results": ("4. results through 2 hops", workloads.remote_results),
    "stream_tcp_server": ("4b. stream through 2 hops (tcp-server)", workloads.stream("tcp-server")),
    "stream_connect": ("4c. stream through 2 hops (connect)", workloads.stream("connect")),
    "remote_latency_cat": ("5. remote units (cat)", workloads.remote_latency("cat")),
    "remote_latency_echo": ("5. remote units (echo-worktype)", workloads.remote_latency("echo")),
    "isolation": ("7. plugins in-process against isolation: process (ours only)",
                  workloads.isolation),
    # Scale (opt-in: --scale, or by name with --only).
    "scale_units_10k": ("S1. a node holding 10k finished units", scale.units_finished),
    "scale_running_500": ("S2. 500 units running at once", scale.units_running),
    "scale_mesh_200": ("S3. a 200-node mesh", scale.mesh),
    "convergence_line_20": ("S4. a node joins a line of 20", scale.join_line(20)),
    "convergence_line_50": ("S4. a node joins a line of 50", scale.join_line(50)),
}

#: Workloads that run only with --scale (or when named with --only): they take minutes and
#: several GiB of memory.
SCALE = ["scale_units_10k", "scale_running_500", "scale_mesh_200", "convergence_line_20",
         "convergence_line_50"]

QUICK = dict(startups=2, idle_settle_s=1.0, units=20, unit_budget_s=10.0, submits=20,
             results_mb=20, remote_runs=3, remote_budget_s=10.0, stream_mb=20,
             transfer_budget_s=20.0, throughput_units=40, throughput_budget_s=10.0,
             scale_units=300, running_units=20, running_window_s=2.0, mesh_nodes=15,
             mesh_idle_s=3.0, joins=2)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rust", required=True, help="our receptor binary (release build)")
    p.add_argument("--go", required=True, help="the reference Go receptor 1.6.9 binary")
    p.add_argument("--only", help="comma-separated workloads to run (default: all): "
                   + ", ".join(WORKLOADS))
    p.add_argument("--impl", default="go,rust", help="implementations to run (default go,rust)")
    p.add_argument("--json", help="where to write the results "
                   "(default bench/results/run-<UTC time>.json)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--scale", action="store_true",
                   help="also run the scale workloads (" + ", ".join(SCALE) + "): about 15 "
                   "minutes more and up to ~8 GiB of memory for the 200 Go nodes")
    for field in dataclasses.fields(Settings):
        p.add_argument("--" + field.name.replace("_", "-"), type=type(field.default),
                       help=f"(default {field.default}; --quick: {QUICK[field.name]})")
    return p.parse_args()


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings(**QUICK) if args.quick else Settings()
    for field in dataclasses.fields(Settings):
        value = getattr(args, field.name)
        if value is not None:
            setattr(s, field.name, value)
    return s


def version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or out.stderr.strip()
    except OSError as e:
        return f"unknown ({e})"


def git_revision() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except OSError:
        return "unknown"


def summary(entry: dict) -> str:
    """One progress line for a finished workload."""
    if "skipped" in entry:
        return "skipped: " + entry["skipped"]
    if "error" in entry:
        return "ERROR: " + entry["error"].splitlines()[0]
    m = entry["metrics"]
    parts = []
    for key in ("units_per_s", "submits_per_s", "mb_per_s", "idle_rss_mib",
                "restart_to_served_list_ms", "rss_mib", "node_rss_mib",
                "node_cpu_s_per_10s", "cancel_all_s", "routed_after_last_greeting_s",
                "rss_per_node_mib", "idle_cpu_s_per_30s"):
        if key in m:
            parts.append(f"{key}={m[key]}")
    parts += [f"{key}={value}" for key, value in m.items()
              if key.endswith(("_units_per_s", "_mb_per_s", "_over_in_process"))]
    for key in ("latency", "startup_ms", "work_list", "join_routed"):
        if key in m:
            parts.append(f"{key} median={m[key]['median_ms']}ms p95={m[key]['p95_ms']}ms "
                         f"n={m[key]['n']}")
    return ", ".join(parts)


def main() -> int:
    args = parse_args()
    settings = settings_from(args)
    impls = [Impl(name, getattr(args, name)) for name in args.impl.split(",")]
    if args.only:
        selected = args.only.split(",")
    else:
        selected = [w for w in WORKLOADS if args.scale or w not in SCALE]
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        print(f"unknown workloads: {', '.join(unknown)}", file=sys.stderr)
        return 2

    started = time.time()
    load_at_start = os.getloadavg()
    results: dict = {}
    failed = False
    for name in selected:
        title, run = WORKLOADS[name]
        results[name] = {}
        for impl in impls:
            print(f"[{impl.name:4}] {title} ...", end=" ", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                entry = run(impl, settings)
            except Skip as e:
                entry = {"skipped": str(e)}
            except Exception as e:  # a failing workload must not stop the others
                failed = True
                entry = {"error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()}
            entry["duration_s"] = round(time.perf_counter() - t0, 2)
            results[name][impl.name] = entry
            print(f"{summary(entry)} ({entry['duration_s']}s)", file=sys.stderr, flush=True)

    table, rows = report.main_table(results)
    resources = report.resources_table(results)
    print()
    print(table)
    print()
    print("The same, as Markdown (for the README):")
    print(report.markdown_table(rows))
    print()
    print("Resources per node and workload (CPU = user+sys of the node and its reaped "
          "children; op = one unit of the work column):")
    print(resources)
    notes = [(n, i, e["skipped"]) for n, per in results.items() for i, e in per.items()
             if "skipped" in e]
    notes += [(n, i, e["error"]) for n, per in results.items() for i, e in per.items()
              if "error" in e]
    if notes:
        print()
        for name, impl, why in notes:
            print(f"{name} [{impl}]: {why}")

    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": sys.argv,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "load_average_at_start": load_at_start,
                    "load_average_at_end": os.getloadavg()},
        "go": {"binary": args.go, "version": version(args.go)},
        "rust": {"binary": args.rust, "version": version(args.rust),
                 "git": git_revision()},
        "settings": dataclasses.asdict(settings),
        "table": rows,
        "workloads": results,
    }
    path = args.json or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results",
        "run-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"\nresults written to {path} (run took {doc['duration_s']}s; load average "
          f"{load_at_start[0]:.1f} at the start, {doc['machine']['load_average_at_end'][0]:.1f} "
          f"at the end, on {os.cpu_count()} CPUs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
