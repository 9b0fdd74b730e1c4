#!/usr/bin/env python3
"""Times one `ims3-bench` workload under several builds, alternated, and writes the rows as JSON.

A change's speed-up is measured by building `ims3-bench` at each commit (copy each binary away,
e.g. `cargo build -p ims3-bench && cp target/debug/ims3-bench /tmp/bench-<commit>`), then:

    scripts/bench-builds.py --out results/bench/<name>.json --what "<what changed>" \
        --build "main before=bfb2de3=/tmp/bench-bfb2de3" --build "fused norm=da5de14=/tmp/bench-da5de14" \
        --workload convnet_step= --workload "resnet_ap_step=--resnet-batch 8" --threads 1,2 --rounds 2

Each round runs every (workload, threads, build) once, builds in the given order, so slow drifts
of the machine hit every build alike. The summary is the mean of the round medians per build and
the speed-up of each build over the first. Run it with nothing else on the machine.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_one(binary, workload, extra, threads, iters, warmup):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        cmd = [binary, "--device", "cpu", "--workloads", workload, "--iters", str(iters), "--warmup", str(warmup), "--out", out] + extra
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"bench-builds: {' '.join(map(shlex.quote, cmd))} failed ({p.returncode}):\n{p.stderr[-2000:]}")
        with open(out) as f:
            data = json.load(f)
    rows = data.get("records") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        sys.exit(f"bench-builds: {out} of {binary} holds no rows")
    return rows, cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--what", required=True, help="what the builds differ in")
    ap.add_argument("--build", action="append", required=True, help="label=commit=path of an ims3-bench binary (first: the baseline)")
    ap.add_argument("--workload", action="append", required=True, help="name=extra ims3-bench arguments (may be empty)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()

    builds = []
    for b in a.build:
        parts = b.split("=", 2)
        if len(parts) != 3 or not os.access(parts[2], os.X_OK):
            sys.exit(f"bench-builds: --build {b!r}: expected label=commit=path of an executable")
        builds.append(dict(label=parts[0], commit=parts[1], path=parts[2]))
    workloads = []
    for w in a.workload:
        name, _, extra = w.partition("=")
        workloads.append((name, shlex.split(extra)))
    threads = [int(t) for t in a.threads.split(",")]

    rows = []
    for r in range(1, a.rounds + 1):
        for name, extra in workloads:
            for t in threads:
                for b in builds:
                    got, cmd = run_one(b["path"], name, extra, t, a.iters, a.warmup)
                    for g in got:
                        row = dict(round=r, build=b["label"], commit=b["commit"], threads=t, workload=name,
                                   median_s=g["median_s"], min_s=g.get("min_s"), first_s=g.get("first_call_s"),
                                   iters=g.get("iters"), batch=g.get("batch"),
                                   args=" ".join(map(shlex.quote, cmd[1:])))
                        rows.append(row)
                        print(f"round {r} {name} t{t} {b['label']:>24}: median {row['median_s']:.4f} s", flush=True)

    summary = {}
    for name, _ in workloads:
        for t in threads:
            base = None
            for b in builds:
                meds = [x["median_s"] for x in rows if x["workload"] == name and x["threads"] == t and x["build"] == b["label"]]
                mean = statistics.mean(meds)
                base = mean if base is None else base
                summary.setdefault(name, {}).setdefault(f"{t}_thread{'s' if t > 1 else ''}", {})[b["label"]] = dict(
                    mean_of_round_medians_s=mean, speedup_over_first=base / mean)
    doc = dict(what=a.what,
               command="scripts/bench-builds.py " + " ".join(map(shlex.quote, sys.argv[1:])),
               machine=f"{os.cpu_count()}-core {cpu_name()}",
               builds=[dict(label=b["label"], commit=b["commit"]) for b in builds],
               summary=summary, rows=rows)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
