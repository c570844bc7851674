"""The comparison tables printed at the end of a run.

Every ratio is Rust / Go of the same figure. For "higher is better" figures (rates,
throughput) a ratio above 1 means ours is better; for "lower is better" figures (times,
memory, CPU) a ratio below 1 does. Where the mission sets a target the table shows it and
whether this run met it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One figure of the main table."""

    label: str
    #: Workload holding the figure on our side.
    workload: str
    #: Keys into the workload's `metrics`.
    path: tuple[str, ...]
    #: True if a higher value is better.
    higher_better: bool
    #: Target for the Rust/Go ratio (>= for higher_better, <= otherwise), if the mission sets one.
    target: float | None = None
    #: Workload holding Go's figure when it differs (Go has no echo-worktype: compare with cat).
    go_workload: str | None = None


ROWS = [
    Row("start to greeting, median (ms)", "startup_idle", ("startup_ms", "median_ms"), False),
    Row("idle RSS (MiB)", "startup_idle", ("idle_rss_mib",), False, 0.3),
    Row("idle RSS: anonymous (MiB)", "startup_idle", ("idle_rss_anon_mib",), False),
    Row("idle RSS: mapped files (MiB)", "startup_idle", ("idle_rss_file_mib",), False),
    Row("idle CPU over the window (ms)", "startup_idle", ("idle_cpu_ms",), False),
    Row("local units/s, cat", "local_units_cat", ("units_per_s",), True, 5.0),
    Row("local units/s, echo (Go: cat)", "local_units_echo", ("units_per_s",), True, 5.0,
        "local_units_cat"),
    Row("local unit latency median (ms), cat", "local_units_cat", ("latency", "median_ms"), False,
        0.02),
    Row("local unit latency p95 (ms), cat", "local_units_cat", ("latency", "p95_ms"), False, 0.02),
    Row("local unit latency median (ms), echo (Go: cat)", "local_units_echo",
        ("latency", "median_ms"), False, 0.02, "local_units_cat"),
    Row("local unit latency p95 (ms), echo (Go: cat)", "local_units_echo", ("latency", "p95_ms"),
        False, 0.02, "local_units_cat"),
    Row("submits/s without results, cat", "submit_rate", ("submits_per_s",), True, 5.0),
    Row("submits/s without results, echo (Go: cat)", "submit_rate_echo", ("submits_per_s",),
        True, 5.0, "submit_rate"),
    Row("units/s finished, local cat, sequential", "units_local_cat", ("units_per_s",), True, 5.0),
    Row("units/s finished, local cat, 8 submitters", "units_local_cat_8", ("units_per_s",), True,
        5.0),
    Row("units/s finished, local echo, sequential (Go: cat)", "units_local_echo", ("units_per_s",),
        True, 5.0, "units_local_cat"),
    Row("units/s finished, local echo, 8 submitters (Go: cat)", "units_local_echo_8",
        ("units_per_s",), True, 5.0, "units_local_cat_8"),
    Row("CPU per local unit, all nodes (ms), cat", "units_local_cat", ("cpu_ms_per_unit",), False,
        1.0),
    Row("CPU per local unit, nodes only (ms), cat", "units_local_cat", ("cpu_self_ms_per_unit",),
        False, 1.0),
    Row("units/s finished, cat 1 hop away, sequential", "units_remote1", ("units_per_s",), True,
        10.0),
    Row("units/s finished, cat 1 hop away, 8 submitters", "units_remote1_8", ("units_per_s",),
        True, 10.0),
    Row("units/s finished, cat 2 hops away, sequential", "units_remote2", ("units_per_s",), True,
        10.0),
    Row("units/s finished, cat 2 hops away, 8 submitters", "units_remote2_8", ("units_per_s",),
        True, 10.0),
    Row("units stuck (never finished), 2 hops, sequential", "units_remote2", ("stuck",), False),
    Row("CPU per remote unit, 3 nodes (ms), 2 hops", "units_remote2", ("cpu_ms_per_unit",), False,
        1.0),
    Row("local results (MB/s)", "local_results", ("mb_per_s",), True),
    Row("results through 2 hops (MB/s)", "remote_results", ("mb_per_s",), True, 20.0),
    Row("results through 2 hops, first byte (ms)", "remote_results", ("first_byte_ms",), False),
    Row("stream through 2 hops, tcp-server (MB/s)", "stream_tcp_server", ("mb_per_s",), True),
    Row("stream through 2 hops, connect (MB/s)", "stream_connect", ("mb_per_s",), True),
    Row("remote unit latency median (ms), cat", "remote_latency_cat", ("latency", "median_ms"),
        False, 0.02),
    Row("remote unit latency p95 (ms), cat", "remote_latency_cat", ("latency", "p95_ms"), False,
        0.02),
    Row("remote unit latency max (ms), cat", "remote_latency_cat", ("latency", "max_ms"), False),
    Row("remote unit slowest / median, cat (Rust alone: <= 10)", "remote_latency_cat",
        ("worst_over_median",), False),
    Row("remote unit latency median (ms), echo (Go: cat)", "remote_latency_echo",
        ("latency", "median_ms"), False, 0.02, "remote_latency_cat"),
    # Scale (--scale): the sizes are the defaults of --scale-units, --running-units and
    # --mesh-nodes.
    Row("10k finished units: work list (ms)", "scale_units_10k", ("work_list", "median_ms"),
        False),
    Row("10k finished units: node RSS (MiB)", "scale_units_10k", ("rss_mib",), False),
    Row("10k finished units: restart to a served work list (ms)", "scale_units_10k",
        ("restart_to_served_list_ms",), False),
    Row("500 running units: node RSS (MiB)", "scale_running_500", ("node_rss_mib",), False),
    Row("500 running units: all processes PSS (MiB)", "scale_running_500",
        ("all_processes_pss_mib",), False),
    Row("500 running units: node CPU per 10 s (s)", "scale_running_500",
        ("node_cpu_s_per_10s",), False),
    Row("500 running units: all processes CPU per 10 s (s)", "scale_running_500",
        ("all_processes_cpu_s_per_10s",), False),
    Row("500 running units: node CPU per unit started (ms)", "scale_running_500",
        ("start_cpu_self_ms_per_unit",), False),
    Row("500 running units: CPU per unit started, with its processes (ms)", "scale_running_500",
        ("start_cpu_ms_per_unit",), False),
    Row("500 running units: work list (ms)", "scale_running_500", ("work_list", "median_ms"),
        False),
    Row("500 running units: cancel them all (s)", "scale_running_500", ("cancel_all_s",), False),
    Row("200-node mesh: all routes after the last start (s)", "scale_mesh_200",
        ("routed_after_last_greeting_s",), False),
    Row("200-node mesh: RSS per node (MiB)", "scale_mesh_200", ("rss_per_node_mib",), False),
    Row("200-node mesh: PSS per node (MiB)", "scale_mesh_200", ("pss_per_node_mib",), False),
    Row("200-node mesh: idle CPU, all nodes, per 30 s (s)", "scale_mesh_200",
        ("idle_cpu_s_per_30s",), False),
    Row("join a line of 20: all routes, median (ms)", "convergence_line_20",
        ("join_routed", "median_ms"), False),
    Row("join a line of 50: all routes, median (ms)", "convergence_line_50",
        ("join_routed", "median_ms"), False),
]


def _dig(results: dict, workload: str, impl: str, path: tuple[str, ...]):
    """(value, note): the figure, or None and why it is missing."""
    entry = results.get(workload, {}).get(impl)
    if entry is None:
        return None, "not run"
    if "skipped" in entry:
        return None, "skipped"
    if "error" in entry:
        return None, "error"
    metrics = entry.get("metrics", {})
    value = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return None, "n/a"
    # Only the rate of a transfer stopped by its time budget is partial.
    return value, "*" if metrics.get("partial") and path[-1] == "mb_per_s" else ""


def _fmt(value, note: str) -> str:
    """The value (3 significant digits), or the note saying why there is none; a partial
    measure (stopped by its time budget) gets a `*`."""
    if value is None:
        return note
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = str(value)
    return text + note


def _ratio(rust, go) -> float | None:
    if rust is None or go is None or go == 0:
        return None
    return rust / go


def main_table(results: dict) -> tuple[str, list[dict]]:
    """The figures table (text) and its rows (for the JSON document)."""
    header = ("figure", "Go 1.6.9", "Rust", "Rust/Go", "target", "met")
    lines, rows = [], []
    for row in ROWS:
        if row.workload not in results:
            continue
        go, go_note = _dig(results, row.go_workload or row.workload, "go", row.path)
        rust, rust_note = _dig(results, row.workload, "rust", row.path)
        ratio = _ratio(rust, go)
        target = "" if row.target is None else ((">= " if row.higher_better else "<= ")
                                                + f"{row.target:g}")
        met = ""
        if row.target is not None and ratio is not None:
            ok = ratio >= row.target if row.higher_better else ratio <= row.target
            met = "yes" if ok else "no"
        lines.append((row.label, _fmt(go, go_note), _fmt(rust, rust_note),
                      "" if ratio is None else f"{ratio:.3g}", target, met))
        rows.append({"figure": row.label, "go": go, "rust": rust,
                     "ratio_rust_over_go": ratio, "higher_is_better": row.higher_better,
                     "target": row.target, "met": met or None})
    text = _render(header, lines)
    if any("*" in cell for line in lines for cell in line[1:3]):
        text += ("\n* partial: the transfer was stopped by its time budget "
                 "(--transfer-budget-s); the rate is over the bytes moved until then")
    return text, rows


def markdown_table(rows: list[dict]) -> str:
    """The figures of `main_table` as a Markdown table, ready to paste into the README."""
    out = ["| figure | Go 1.6.9 | Rust | Rust/Go |", "|---|---|---|---|"]
    for row in rows:
        ratio = row["ratio_rust_over_go"]
        out.append("| {} | {} | {} | {} |".format(
            row["figure"], "-" if row["go"] is None else _fmt(row["go"], ""),
            "-" if row["rust"] is None else _fmt(row["rust"], ""),
            "-" if ratio is None else f"{ratio:.3g}"))
    return "\n".join(out)


def resources_table(results: dict) -> str:
    """For each workload that reported resources and each of its nodes: the CPU seconds
    (user+sys, the node's own plus its reaped children's) and that CPU per unit of work, and
    the node's peak RSS during the workload."""
    header = ("workload", "node", "work (Go / Rust)", "Go CPU", "Rust CPU", "Go CPU/op",
              "Rust CPU/op", "Rust/Go", "Go peak RSS", "Rust peak RSS", "Rust/Go")
    lines = []
    for workload, per_impl in results.items():
        go, rust = per_impl.get("go", {}), per_impl.get("rust", {})
        res = [e.get("resources", {}).get("nodes", {}) for e in (go, rust)]
        work = [_work(e) for e in (go, rust)]
        work_text = " / ".join(f"{w[0]:.4g} {w[1]}" if w else "-" for w in work)
        for node in sorted(set(res[0]) | set(res[1])):
            stats = [r.get(node) for r in res]
            cpu = [None if st is None else st["cpu_self_s"] + st["cpu_children_s"]
                   for st in stats]
            per_op = [None if c is None or not w else (c * 1000 / w[0], "ms/" + w[1].rstrip("s"))
                      for c, w in zip(cpu, work)]
            peak = [None if st is None else st["peak_rss_mib"] for st in stats]
            cells = [workload, node, work_text]
            cells += ["-" if c is None else f"{c:.3g} s" for c in cpu]
            cells += ["-" if p is None else f"{p[0]:.3g} {p[1]}" for p in per_op]
            r = _ratio(per_op[1][0] if per_op[1] else None, per_op[0][0] if per_op[0] else None)
            cells.append("" if r is None else f"{r:.3g}")
            cells += ["-" if p is None else f"{p:.1f} MiB" for p in peak]
            r = _ratio(peak[1], peak[0])
            cells.append("" if r is None else f"{r:.3g}")
            lines.append(tuple(cells))
            workload, work_text = "", ""
    return _render(header, lines)


def _work(entry: dict) -> tuple[float, str] | None:
    """How much work the workload did: (count, what)."""
    m = entry.get("metrics")
    if not m:
        return None
    for key, what in (("units", "units"), ("submits", "submits")):
        if key in m:
            return m[key], what
    if "bytes" in m:
        return m["bytes"] / 1e6, "MB"
    return None


def _render(header: tuple, lines: list[tuple]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = []
    for i, line in enumerate([header] + lines):
        out.append("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                             for j, (c, w) in enumerate(zip(line, widths))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
