"""Heterogeneous fleets: does work follow speed, and do backups hide the slowest class?

Three runs of the demo job on emulated hardware (worker --profile):
- `mixed`: gpu-mining-rig, server, laptop-cpu and edge-box workers, straggler backups on;
- `mixed, no backups`: the same fleet with backups off (what backups buy);
- `without slowest`: the fleet minus its slowest class, backups on (the reference).
The issue's goal: the mixed fleet's median round time within 1.3x of the reference.
Run: `python -m bench.fleet`; `run(quick)` returns the figures.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
from pathlib import Path

from deploy.local import LocalCluster
from deploy.mix import parse_mix
from scheduler.client import JobClient

SPEC = Path(__file__).resolve().parent.parent / "deploy" / "jobs" / "digits-mlp.toml"
MIXED = "gpu-mining-rig:2,server:2,laptop-cpu:2,edge-box:2"
WITHOUT_SLOWEST = "gpu-mining-rig:2,server:2,laptop-cpu:2"


def run_fleet(mix: str, backups: bool, rounds: int) -> dict:
    spec = SPEC.read_text().replace("rounds = 80", f"rounds = {rounds}")
    spec = spec.replace("target_accuracy = 0.96", "target_accuracy = 0.0")  # fixed round count
    spec = spec.replace("[job]\n", f"[job]\nbackups = {'true' if backups else 'false'}\n", 1)
    with LocalCluster(fleet=parse_mix(mix)) as cluster:
        with JobClient(cluster.address) as client:
            job_id = client.submit(spec)
            final = client.wait(job_id)
            workers = client.workers()
        with sqlite3.connect(cluster.db_path) as db:
            closes = [row[0] for row in db.execute(
                "SELECT closed_at FROM rounds WHERE job_id=? ORDER BY round", (job_id,))]
            backups_sent = db.execute("SELECT COALESCE(SUM(value), 0) FROM counters WHERE "
                                      "job_id=? AND name='backups'", (job_id,)).fetchone()[0]
    cluster.cleanup()
    round_times = [b - a for a, b in zip(closes, closes[1:])]
    by_class: dict[str, dict] = {}
    for w in workers:
        cls = by_class.setdefault(w["profile"]["profile_name"],
                                  {"workers": 0, "shards": 0, "observed_gflops": 0.0})
        cls["workers"] += 1
        cls["shards"] += w["shards_accepted"]
        cls["observed_gflops"] += w["observed_gflops"]
    for cls in by_class.values():
        cls["observed_gflops"] /= cls["workers"]  # the class average
    return {"mix": mix, "backups": backups, "status": final["status"],
            "final_accuracy": round(final["final_accuracy"], 4),
            "median_round_s": round(statistics.median(round_times), 4),
            "backups_sent": int(backups_sent), "work_by_class": by_class}


def run(quick: bool = False) -> dict:
    rounds = 15 if quick else 40
    mixed = run_fleet(MIXED, True, rounds)
    no_backups = run_fleet(MIXED, False, rounds)
    reference = run_fleet(WITHOUT_SLOWEST, True, rounds)
    return {"mixed": mixed, "mixed_no_backups": no_backups, "without_slowest": reference,
            "round_time_ratio_vs_without_slowest": round(
                mixed["median_round_s"] / reference["median_round_s"], 3),
            "round_time_ratio_no_backups": round(
                no_backups["median_round_s"] / reference["median_round_s"], 3)}


def markdown(result: dict) -> str:
    lines = ["| fleet | backups | median round | backups sent | shards per worker by class "
             "(observed GFLOP/s, wire included) |",
             "|---|---|---:|---:|---|"]
    for key in ("mixed", "mixed_no_backups", "without_slowest"):
        r = result[key]
        work = ", ".join(f"{name} ({c['observed_gflops']:.3f}): {c['shards'] / c['workers']:.1f}"
                         for name, c in sorted(r["work_by_class"].items(),
                                               key=lambda kv: -kv[1]["observed_gflops"]))
        lines.append(f"| {r['mix']} | {'on' if r['backups'] else 'off'} | "
                     f"{1000 * r['median_round_s']:.0f} ms | {r['backups_sent']} | {work} |")
    lines.append(f"\nMixed fleet round time / fleet without its slowest class: "
                 f"**{result['round_time_ratio_vs_without_slowest']}x** with backups, "
                 f"{result['round_time_ratio_no_backups']}x without.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(json.dumps(result, sort_keys=True) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
