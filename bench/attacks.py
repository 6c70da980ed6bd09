"""The attack suite: 2 of 10 workers misbehave; does the job still reach the clean accuracy?

Two defences are measured against each attack, each against its own clean run:
- `verified-mean`: the demo job (mean aggregation) with replication, spot checks and bans;
- `robust-trimmed`: no replication, 10 shards a round, trimmed mean (beta 0.2) absorbs the rest.
Run: `python -m bench.attacks [--quick]`; `run(quick)` returns the figures for bench/run.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from deploy.local import LocalCluster
from protos import signing
from scheduler.client import JobClient
from scheduler.optim import Optimizer
from scheduler.rounds import aggregate_updates
from scheduler.spec import JobSpec
from worker.workloads import compute_update, evaluate_params

JOBS = Path(__file__).resolve().parent.parent / "deploy" / "jobs"
DEFENCES = {"verified-mean": JOBS / "digits-mlp.toml", "robust-trimmed": JOBS / "digits-mlp-robust.toml"}
ATTACKS = ("sign-flip", "gaussian-noise", "alie", "ipm", "lazy")


def run_case(spec_path: Path, attack: str | None, workers: int = 10, byzantine: int = 2) -> dict:
    """Train `spec_path` on a local cluster whose last `byzantine` workers run `attack`."""
    bad = byzantine if attack else 0
    fleet = [[] for _ in range(workers - bad)] + [["--behavior", attack] for _ in range(bad)]
    started = time.monotonic()
    with LocalCluster(fleet=fleet) as cluster:
        attacker_ids = {signing.worker_id_for(signing.public_bytes(signing.load_or_create_key(
            cluster.workdir / "keys" / f"worker-{i}.key"))) for i in range(workers - bad, workers)}
        with JobClient(cluster.address) as client:
            final = client.wait(client.submit(spec_path.read_text()))
            rows = client.workers()
    cluster.cleanup()
    banned = {w["worker_id"] for w in rows if w["banned"]}
    return {
        "attack": attack or "none", "status": final["status"], "rounds": final["round"],
        "final_accuracy": round(final["final_accuracy"], 4),
        "rejected_by_reason": final["rejected_by_reason"],
        "attackers_banned": len(banned & attacker_ids), "honest_banned": len(banned - attacker_ids),
        "verification_overhead_pct": final.get("verification_overhead_pct", 0.0),
        "wall_s": round(time.monotonic() - started, 1),
    }


def clean_reference(spec: JobSpec) -> dict:
    """What a clean run of `spec` must give, computed serially with the coordinator's own
    aggregation and optimizer: every shard honest, no network. Deterministic."""
    config = spec.workload
    params = config.initial_params()
    optimizer = Optimizer(spec.optimizer, spec.lr, spec.momentum, params.size)
    previous, accuracy, round_no = None, 0.0, 0
    for round_no in range(spec.rounds):
        results = [compute_update(config, params, round_no, s) for s in range(config.shards)]
        updates = np.stack([r.update for r in results])
        samples = np.array([r.samples for r in results], dtype=np.float64)
        previous = aggregate_updates(spec, updates, samples, previous)
        params = optimizer.step(params, previous)
        accuracy = evaluate_params(config, params)[1]
        if spec.target_accuracy and accuracy >= spec.target_accuracy:
            break
    return {"rounds": round_no + 1, "final_accuracy": round(accuracy, 4)}


def run(quick: bool = False, progress=print) -> dict:
    """The matrix (quick: one attack per defence) with each defence's clean run beside it."""
    matrix = {"sign-flip": ["verified-mean"], "alie": ["robust-trimmed"]} if quick else \
        {attack: list(DEFENCES) for attack in ATTACKS}
    results: dict = {"clean": {}, "cases": []}
    for defence in sorted({d for ds in matrix.values() for d in ds}):
        results["clean"][defence] = run_case(DEFENCES[defence], None)
        progress(f"clean {defence}: {results['clean'][defence]['final_accuracy']}")
    for attack, defences in matrix.items():
        for defence in defences:
            case = run_case(DEFENCES[defence], attack)
            clean = results["clean"][defence]["final_accuracy"]
            case.update(defence=defence, accuracy_drop_points=round(100 * (clean - case["final_accuracy"]), 2))
            results["cases"].append(case)
            progress(f"{attack} vs {defence}: accuracy {case['final_accuracy']} "
                     f"(drop {case['accuracy_drop_points']} points), "
                     f"{case['attackers_banned']} attackers banned")
    return results


def markdown(results: dict) -> str:
    lines = ["| attack | defence | final accuracy | clean | drop (points) | attackers banned | "
             "rejected | verification overhead |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for case in results["cases"]:
        clean = results["clean"][case["defence"]]["final_accuracy"]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(case["rejected_by_reason"].items())) or "-"
        lines.append(f"| {case['attack']} | {case['defence']} | {case['final_accuracy']:.4f} | "
                     f"{clean:.4f} | {case['accuracy_drop_points']:.2f} | {case['attackers_banned']}/2"
                     f" | {rejected} | {case['verification_overhead_pct']:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.quick, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(results, sort_keys=True) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
