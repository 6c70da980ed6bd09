"""`shardgrid bench`: the same job on a centralized Ray baseline and on shardgrid, side by side.

    shardgrid bench [--quick] [--scenario NAME ...] [--out DIR] [--json]

Both systems run on this machine in one invocation, one after the other (never at once: they
would steal each other's cores). Writes DIR/results.json, DIR/report.md and DIR/bench-*.png;
`--json` also prints the results as one JSON object on the last line of stdout. Progress goes to
stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench import report
from bench.baseline import REPO_ROOT, RunResult, local_ray, run_baseline
from bench.cost import DEFAULT_PROFILE_WATTS, CostAssumptions, baseline_cost, volunteer_cost
from bench.harness import (SCENARIOS, Scenario, calibrate, detect_capabilities, run_shardgrid,
                           scenario_spec, summarize_shardgrid, worker_flags)
from scheduler.spec import JobSpec, parse_spec

DEFAULT_JOB = REPO_ROOT / "deploy" / "jobs" / "digits-mlp.toml"
# `--job wide`: the demo job with ~60x the compute per shard (2x512 MLP, 256-sample batches,
# 1.2 MB of parameters), to show how the gap changes once rounds are not almost free.
WIDE_JOB = """
[job]
name = "digits-mlp-wide"
rounds = 80
shards_per_round = 4
target_accuracy = 0.96
lease_timeout_s = 30
[model]
workload = "mlp"
hidden = [512, 512]
[data]
dataset = "digits"
batch_size = 256
seed = 0
[optimizer]
name = "adam"
lr = 0.0005
"""
BUILTIN_JOBS = {"wide": WIDE_JOB}
BASELINE_NOTES = {
    "unverified": "The Ray baseline never verifies: this is shardgrid's protocol without "
                  "verification against it.",
    "heterogeneous": "The Ray baseline runs on identical actors: a cloud cluster is homogeneous.",
    "churn": "The Ray baseline is the clean run: its static placement has no leases, so a killed "
             "actor fails the round instead of handing the shard to someone else.",
    "byzantine": "The Ray baseline is the clean run: it trusts every actor and has no defence "
                 "against a poisoned update.",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shardgrid bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="clean scenario only, one run each: finishes in well under 2 minutes")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                        help=f"run only these ({', '.join(SCENARIOS)}); repeatable")
    parser.add_argument("--out", default="bench-results", help="output folder (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print results as JSON on the last line")
    parser.add_argument("--job", default=str(DEFAULT_JOB),
                        help="job spec TOML, or 'wide' for a compute-heavier built-in variant "
                             "(default: the demo job)")
    parser.add_argument("--workers", type=int, default=4, help="workers / Ray actors (default: 4)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per system for clean and unverified, median reported "
                             "(default: 1 with --quick, else 3)")
    parser.add_argument("--cloud-usd-per-hour", type=float, default=CostAssumptions.cloud_usd_per_hour,
                        help="price of the VM the baseline rents (default: %(default)s, a 4-vCPU "
                             "general-purpose on-demand VM)")
    parser.add_argument("--energy-usd-per-kwh", type=float, default=CostAssumptions.energy_usd_per_kwh,
                        help="volunteers' electricity tariff (default: %(default)s)")
    parser.add_argument("--watts", action="append", default=[], metavar="PROFILE=W",
                        help="extra draw of a hardware profile in watts, e.g. laptop-cpu=25")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def cost_assumptions(args: argparse.Namespace) -> CostAssumptions:
    watts = dict(DEFAULT_PROFILE_WATTS)
    for item in args.watts:
        name, _, value = item.partition("=")
        try:
            watts[name] = float(value)
        except ValueError:
            raise SystemExit(f"--watts expects PROFILE=WATTS, got {item!r}") from None
    return CostAssumptions(cloud_usd_per_hour=args.cloud_usd_per_hour,
                           energy_usd_per_kwh=args.energy_usd_per_kwh, profile_watts=watts)


def summarize_baseline(result: RunResult, spec: JobSpec, costs: CostAssumptions) -> dict:
    summary = result.to_dict()
    params_bytes = 4 * result.params_size
    # Per round: the parameters reach every actor, every shard's update comes back.
    moved = len(result.rounds) * params_bytes * (result.workers + spec.shards)
    summary.update(cold_start_s=result.setup_s,
                   bytes_per_sample=moved / result.samples if result.samples else 0.0,
                   verification_overhead=0.0, cost=baseline_cost(result.wall_s, costs))
    return summary


def _median_run(summaries: list[dict]) -> dict:
    """The run whose time to target (wall time when never reached) is the median one."""
    def key(s: dict) -> float:
        return s["time_to_target_s"] if s["time_to_target_s"] is not None else float("inf")
    ranked = sorted(summaries, key=key)
    return ranked[(len(ranked) - 1) // 2]


def _ratio(shardgrid: dict, baseline: dict) -> float | None:
    if shardgrid["time_to_target_s"] is None or not baseline["time_to_target_s"]:
        return None
    return shardgrid["time_to_target_s"] / baseline["time_to_target_s"]


class Runner:
    """Runs the baseline and the scenarios with one progress display on stderr."""

    def __init__(self, args: argparse.Namespace, progress: Progress):
        self.args, self.progress = args, progress
        self.out = Path(args.out)
        self.base_toml = BUILTIN_JOBS.get(args.job) or Path(args.job).read_text()
        self.spec = parse_spec(self.base_toml)
        self.costs = cost_assumptions(args)
        self.calib = calibrate(self.spec)

    def _tracker(self, label: str):
        task = self.progress.add_task(label, total=self.spec.rounds, accuracy="")

        def on_round(record) -> None:
            accuracy = record["accuracy"] if isinstance(record, dict) else record.accuracy
            self.progress.update(task, advance=1, accuracy=f"acc {accuracy:.3f}")
        return task, on_round

    def baselines(self, repeats: int) -> list[dict]:
        runs = []
        with local_ray():
            for i in range(repeats):
                task, on_round = self._tracker(f"ray baseline #{i + 1}")
                result = run_baseline(self.spec, self.args.workers, on_round=on_round)
                self.progress.update(task, total=len(result.rounds))
                runs.append(summarize_baseline(result, self.spec, self.costs))
        return runs

    def shardgrid(self, scenario: Scenario, flags: list[list[str]], repeats: int,
                  expected_rounds: int) -> list[dict]:
        scenario = Scenario(**{**scenario.__dict__, "workers": self.args.workers})
        spec_toml = scenario_spec(self.base_toml, scenario)
        spec = parse_spec(spec_toml)
        runs = []
        for i in range(repeats):
            task, on_round = self._tracker(f"shardgrid {scenario.name} #{i + 1}")
            workdir = self.out / "clusters" / f"{scenario.name}-{i + 1}"
            shutil.rmtree(workdir, ignore_errors=True)
            run = run_shardgrid(spec_toml, scenario, flags, workdir, on_round=on_round,
                                expected_rounds=expected_rounds)
            self.progress.update(task, total=len(run.per_round))
            summary = summarize_shardgrid(run, spec, self.calib)
            profiles = [w["profile"].get("profile_name", "") for w in run.worker_stats]
            summary["cost"] = volunteer_cost(summary["wall_s"], profiles,
                                             summary["verification_overhead"], self.costs)
            runs.append(summary)
            shutil.rmtree(workdir, ignore_errors=True)  # kept only when the run failed
        return runs


def run_benchmark(args: argparse.Namespace, console: Console) -> dict:
    # Other processes on the machine skew both systems' times: record how busy it was.
    load_before = os.getloadavg()[0]
    names = args.scenario or (["clean"] if args.quick else list(SCENARIOS))
    repeats = args.repeat or (1 if args.quick else 3)
    needs = {SCENARIOS[n].needs for n in names} - {""}
    capabilities = detect_capabilities() if needs else {}
    planned = {}
    scenarios: dict[str, dict] = {}
    for name in names:
        scenario = Scenario(**{**SCENARIOS[name].__dict__, "workers": args.workers})
        flags = worker_flags(scenario, capabilities)
        scenarios[name] = {"description": scenario.description}
        if isinstance(flags, str):
            scenarios[name].update(status="skipped", note=flags + "; it runs once it lands.")
        else:
            planned[name] = flags
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed:>3.0f} rounds"),
               TextColumn("{task.fields[accuracy]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        runner = Runner(args, progress)
        baselines = runner.baselines(repeats) if planned else []
        for name, flags in planned.items():
            entry = scenarios[name]
            try:
                runs = runner.shardgrid(SCENARIOS[name], flags,
                                        repeats if SCENARIOS[name].repeated else 1,
                                        expected_rounds=_median_run(baselines)["rounds_run"])
            except Exception as exc:  # one broken scenario must not hide the others' figures
                entry.update(status="failed", note=f"{type(exc).__name__}: {exc}")
                continue
            # The baseline is one and the same job in every scenario: its median over all repeats.
            baseline, shardgrid = _median_run(baselines), _median_run(runs)
            entry.update(status="ok", repeats=len(runs), baseline=baseline, shardgrid=shardgrid,
                         time_to_target_ratio=_ratio(shardgrid, baseline),
                         notes=[BASELINE_NOTES[name]] if name in BASELINE_NOTES else [],
                         all_runs={"baseline_time_to_target_s": [b["time_to_target_s"] for b in baselines],
                                   "shardgrid_time_to_target_s": [r["time_to_target_s"] for r in runs]})
    clean = scenarios.get("clean", {})
    return {
        "job": args.job if args.job in BUILTIN_JOBS else Path(args.job).name,
        "workers": args.workers, "quick": args.quick,
        "time_to_target_ratio": clean.get("time_to_target_ratio"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0],
                    "python": platform.python_version(), "ray": _ray_version()},
        "assumptions": {"cost": runner.costs.to_dict(), "calibration": runner.calib},
        "bytes_note": "parameters once per worker per round plus every result's update and "
                      "~1 KiB of lease/header/signature, unless the coordinator reports counters.",
        "capabilities": capabilities, "scenarios": scenarios,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _ray_version() -> str:
    import ray
    return ray.__version__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    results = run_benchmark(args, console)
    written = report.write_outputs(results, Path(args.out))
    for name, scenario in results["scenarios"].items():
        if scenario.get("status") != "ok":
            console.print(f"[yellow]{name}: {scenario['status']}[/]: {scenario.get('note', '')}")
            continue
        b, s = scenario["baseline"], scenario["shardgrid"]
        ratio = scenario["time_to_target_ratio"]
        console.print(f"[bold]{name}[/]: baseline {b['time_to_target_s'] or float('nan'):.2f}s "
                      f"(acc {b['final_accuracy']:.3f}), shardgrid "
                      f"{s['time_to_target_s'] or float('nan'):.2f}s (acc {s['final_accuracy']:.3f}), "
                      f"ratio {ratio if ratio is not None else float('nan'):.2f}x")
    console.print("wrote " + ", ".join(str(p) for p in written))
    if args.json:
        print(json.dumps(results, default=float))
    failed = [n for n, s in results["scenarios"].items() if s.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
