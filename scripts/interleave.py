#!/usr/bin/env python3
"""Times commands side by side, interleaved: run 1 of each, then run 2 of each, ...

Interleaving keeps slow drift of the machine (page cache, the filesystem's recently
deleted inodes, other tenants of a VM) from favouring whichever command ran first. Prints
JSON: {name: {"median": s, "mean": s, "min": s, "max": s, "runs": n}}.

  interleave.py RUNS WARMUP 'name|command args' ...
"""
import json
import shlex
import statistics
import subprocess
import sys
import time


def main():
    runs, warmup = int(sys.argv[1]), int(sys.argv[2])
    cmds = [(spec.split("|", 1)[0], shlex.split(spec.split("|", 1)[1])) for spec in sys.argv[3:]]
    times = {name: [] for name, _ in cmds}
    for i in range(warmup + runs):
        for name, argv in cmds:
            start = time.perf_counter()
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            took = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"{name} failed with exit status {done.returncode}: {' '.join(argv)}")
            if i >= warmup:
                times[name].append(took)
    json.dump(
        {
            name: {
                "median": statistics.median(t),
                "mean": statistics.fmean(t),
                "min": min(t),
                "max": max(t),
                "runs": len(t),
            }
            for name, t in times.items()
        },
        sys.stdout,
        indent=2,
    )


if __name__ == "__main__":
    main()
