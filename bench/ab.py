#!/usr/bin/env python3
"""A/B of two eventbus-bench binaries in one sitting (docs/benchmarks.md,
"Speed, old against new"): runs them alternately, A B B A A B B A A B, and
prints medians of events/s and CPU seconds per million events.

    bench/ab.py SECTIONS A B      # e.g. bench/ab.py unordered,ordered old new

runs /tmp/bench-A and /tmp/bench-B (build each tree with
`cargo build --release -p eventbus-bench` and copy target/release/eventbus-bench
there). Extra arguments after B go to both.
"""
import json, subprocess, statistics, sys
A, B = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else ("old", "new")
order = [A, B, B, A, A, B, B, A, A, B]
only = sys.argv[1] if len(sys.argv) > 1 else "unordered"
res = {A: {}, B: {}}
for who in order:
    out = subprocess.run(["nice","-n","-10",f"/tmp/bench-{who}","--only",only,*sys.argv[4:],"--skip-baselines","--skip-peers","--skip-outbox","--soak-secs","0","--retention-secs","0","--retention-rounds","0","--events","100000","--json"],capture_output=True,text=True,timeout=900)
    try:
        rep = json.loads(out.stdout)
    except Exception as e:
        print(who, "failed", out.stderr[-500:]); continue
    for sec in rep["sections"]:
        for row in sec["rows"]:
            if row.get("events_per_sec") and row["system"].startswith("eventbus"):
                res[who].setdefault(row["system"], []).append(row["events_per_sec"])
                cpu = row.get("cpu_per_million") or {}
                res[who].setdefault(row["system"] + " CPU s/M client", []).append(cpu.get("client") or 0)
                res[who].setdefault(row["system"] + " CPU s/M redis", []).append(cpu.get("redis") or 0)
    print(who, {k: round(v[-1],1) for k, v in res[who].items()}, flush=True)
print("\nsystem | old median (runs) | new median (runs) | new/old")
for k in res[A]:
    o = statistics.median(res[A][k]); n = statistics.median(res[B].get(k,[0]))
    print(f"{k} | {o:,.1f} ({', '.join(f'{x:,.1f}' for x in res[A][k])}) | {n:,.1f} ({', '.join(f'{x:,.1f}' for x in res[B].get(k,[]))}) | {n/o:.2f}")
