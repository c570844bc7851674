"""Side-by-side benchmarks of receptor-rs against the reference Go receptor 1.6.9.

Modules:
    control    raw control-socket protocol (greeting, commands, `work submit`, `work results`)
    node       one receptor process: config file, start, greeting wait, kill, /proc readings
    topology   the node sets a workload runs on (one node; an A-B-C line)
    workloads  the measurements
    report     the ratio table and the JSON document

Only the Python standard library is used, so the benchmark runs on any machine that can build
the project.
"""
