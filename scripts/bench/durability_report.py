#!/usr/bin/env python3
"""durability.sh's report: WORK ROUNDS "CONCURRENCIES" "SETUPS" -> markdown on stdout.

Reads WORK/<setup>.<conc>.<round>.json (`seckill bench --json`), WORK/always.fsyncs (`perf trace
-T` of the always server's fdatasync calls, CLOCK_MONOTONIC ms) with WORK/clock_offset (wall
clock minus CLOCK_MONOTONIC, seconds), WORK/<setup>.<conc>.<round>.latency (`LATENCY LATEST`)
and WORK/load.<conc>.<round> (`uptime` before and after the round). Every figure of a set-up
is the median of its rounds; each ratio the median of the rounds' own ratios to `none`.
"""
import json
import os
import re
import statistics
import sys

work, rounds = sys.argv[1], int(sys.argv[2])
concurrencies = [int(c) for c in sys.argv[3].split()]
setups = sys.argv[4].split()
GOAL = {"always": 0.8, "replica": 0.7}
# Writes the consumer sends on its own connections; each costs an fsync of its own event-loop
# turn under `appendfsync always` unless a batch of buys shares that turn.
CONSUMER_WRITES = ("xreadgroup", "xack", "xautoclaim", "xclaim")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def fsync_events():
    """(wall-clock ms, duration ms) of every traced fsync; [] without a trace."""
    try:
        offset = float(open(f"{work}/clock_offset").read())
        lines = open(f"{work}/always.fsyncs").read().splitlines()
    except OSError:
        return None
    pattern = re.compile(r"^\s*([\d.]+) \(\s*([\d.]+) ms\): .*\b(fdatasync|fsync)\(")
    events = []
    for line in lines:
        m = pattern.match(line)
        if m:
            events.append((float(m.group(1)) + offset * 1000, float(m.group(2))))
    return events


EVENTS = fsync_events()


def diagnose(run, setup, conc, rnd):
    """What bounded one run: a dict of figures (None where unknown)."""
    d = run.get("during_load") or {}
    secs = run["duration_s"]
    batches, purchases = d.get("batches"), d.get("batched_purchases")
    calls = d.get("redis_calls") or {}
    out = {
        "per_call": purchases / batches if batches else None,
        "calls_s": batches / secs if batches is not None else None,
        "consumer_writes_s": None,
        "fsyncs_s": None,
        "fsync_mean": None,
        "fsync_p99": None,
        "busy": None,
        "beyond_s": None,
        "little": None,
        "latency_max": None,
        "per_purchase_ms": conc / run["rps"] * 1000 if run["rps"] else None,
    }
    if d.get("redis_calls") is not None and batches is not None:
        # The persist marks are EVALSHA too: those beyond the batches' calls.
        marks = max(0, calls.get("evalsha", 0) - batches)
        out["consumer_writes_s"] = (sum(calls.get(c, 0) for c in CONSUMER_WRITES) + marks) / secs
    if setup.split("+")[0] != "always":
        return out
    try:
        # LATENCY LATEST: per event, its name, time, latest ms, max ms.
        words = open(f"{work}/{setup}.{conc}.{rnd}.latency").read().split()
        at = words.index("aof-fsync-always")
        out["latency_max"] = float(words[at + 3])
    except (OSError, IndexError, ValueError):
        pass
    if EVENTS is None or not d.get("started_unix_ms"):
        return out
    lo, hi = d["started_unix_ms"], d["ended_unix_ms"]
    took = sorted(ms for t, ms in EVENTS if lo <= t <= hi)
    if not took:
        return out
    mean = statistics.fmean(took)
    out.update(
        fsyncs_s=len(took) / secs,
        fsync_mean=mean,
        fsync_p99=took[min(len(took) - 1, int(len(took) * 0.99))],
        busy=sum(took) / (secs * 1000),
        beyond_s=(len(took) - batches) / secs if batches is not None else None,
        little=conc / (1.5 * mean / 1000),
    )
    return out


def load_averages(conc):
    out = []
    for r in range(1, rounds + 1):
        try:
            text = open(f"{work}/load.{conc}.{r}").read()
        except OSError:
            continue
        out += [m.group(1) for m in re.finditer(r"load average: ([\d.]+)", text)]
    return out


def load_run(path):
    """A run's report, or None when it failed (no JSON)."""
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


for conc in concurrencies:
    runs = {s: [load_run(f"{work}/{s}.{conc}.{r}.json") for r in range(1, rounds + 1)] for s in setups}
    print(f"### {conc} connections\n")
    print(f"1-minute load average at the start and end of each round: {', '.join(load_averages(conc))}\n")
    print("| Redis set-up | buys/s (median) | rounds (buys/s) | p99 ms (median) | ratio to none (median) | ratios (rounds) | goal |")
    print("|---|---|---|---|---|---|---|")
    for s in setups:
        rps = [r and r["rps"] for r in runs[s]]
        ratios = [a and b and a["rps"] / b["rps"] for a, b in zip(runs[s], runs["none"])]
        ratio = median(ratios)
        g = GOAL.get(s)
        met = "" if g is None or ratio is None else (f">= {g}: met" if ratio >= g else f">= {g}: NOT met")
        print(
            f"| {s} | {fmt(median(rps))} | {', '.join(fmt(x) if x else 'failed' for x in rps)} | "
            f"{fmt(median(r and r['latency_ms']['p99'] for r in runs[s]), 2)} | {fmt(ratio, 2)} | "
            f"{', '.join(fmt(x, 2) if x else '-' for x in ratios)} | {met} |"
        )
    print()
    print("What bounded each set-up during the load (medians of the rounds):\n")
    print(
        "| Redis set-up | purchases per call | calls/s | consumer writes/s | time per purchase ms (N / buys/s) "
        "| fsyncs/s | fsync mean / p99 ms | slowest fsync (LATENCY) ms | Redis in fsync | fsyncs/s beyond the calls "
        "| Little bound N / (1.5 fsync) buys/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in setups:
        ds = [diagnose(run, s, conc, i + 1) for i, run in enumerate(runs[s]) if run]
        if not ds:
            continue
        m = {k: median(d[k] for d in ds) for k in ds[0]}
        busy = "-" if m["busy"] is None else f"{m['busy'] * 100:.0f} %"
        print(
            f"| {s} | {fmt(m['per_call'], 1)} | {fmt(m['calls_s'])} | {fmt(m['consumer_writes_s'])} | "
            f"{fmt(m['per_purchase_ms'], 2)} | {fmt(m['fsyncs_s'])} | {fmt(m['fsync_mean'], 2)} / {fmt(m['fsync_p99'], 2)} | "
            f"{fmt(m['latency_max'])} | {busy} | {fmt(m['beyond_s'])} | {fmt(m['little'])} |"
        )
    print()
