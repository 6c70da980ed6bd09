"""Turn benchmark results into results.json, a markdown table and PNG plots.

Plots use matplotlib's Agg backend (no display needed): per scenario one figure with accuracy and
loss against wall time for both systems on the same axes, and the work each worker did.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"ray-baseline": "#4c72b0", "shardgrid": "#dd8452"}


def _num(value, fmt: str = "{:.2f}", none: str = "not reached") -> str:
    if value is None:
        return none
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return fmt.format(value)


def _split_text(split: dict) -> str:
    parts = [(k.removesuffix("_s"), v) for k, v in split.items()
             if k.endswith("_s") and isinstance(v, (int, float))]
    total = sum(v for _, v in parts) or 1.0
    return ", ".join(f"{name} {100 * v / total:.0f}%" for name, v in parts if v / total >= 0.005)


def scenario_table(name: str, scenario: dict) -> list[str]:
    lines = [f"### {name}", "", scenario.get("description", ""), ""]
    if scenario.get("status") != "ok":
        lines += [f"*{scenario.get('status', 'skipped')}:* {scenario.get('note', '')}", ""]
        return lines
    lines += ["| system | time to target (s) | final accuracy | rounds | samples/s | "
              "bytes/sample | verification overhead | cost per run | cold start (s) | time split |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for summary in (scenario["baseline"], scenario["shardgrid"]):
        cost = summary.get("cost", {})
        lines.append(
            f"| {summary['system']} | {_num(summary['time_to_target_s'])} | "
            f"{summary['final_accuracy']:.4f} | {summary['rounds_run']} | "
            f"{summary['samples_per_s']:,.0f} | {summary.get('bytes_per_sample', 0):,.0f} | "
            f"{100 * summary.get('verification_overhead', 0.0):.1f}% | "
            f"${cost.get('usd', 0.0):.2e} | {_num(summary.get('cold_start_s'))} | "
            f"{_split_text(summary.get('time_split', {}))} |")
    ratio = scenario.get("time_to_target_ratio")
    lines += ["", f"shardgrid / baseline time to target: **{_num(ratio, '{:.2f}x', 'n/a')}**"
              + (f" (median of {scenario['repeats']} runs each)" if scenario.get("repeats", 1) > 1
                 else "")]
    for event in scenario["shardgrid"].get("events", []):
        lines.append(f"- {event}")
    for note in scenario.get("notes", []):
        lines.append(f"- {note}")
    return lines + [""]


def summary_table(results: dict) -> list[str]:
    """One line per scenario: both systems' time to target and the headline figures."""
    lines = ["| scenario | Ray time to target (s) | shardgrid time to target (s) | ratio | "
             "final accuracy (Ray / shardgrid) | samples/s (Ray / shardgrid) | shardgrid "
             "bytes/sample | verification overhead | cost per run (Ray / shardgrid) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, scenario in results["scenarios"].items():
        if scenario.get("status") != "ok":
            lines.append(f"| {name} | {scenario.get('status')}: {scenario.get('note', '')} "
                         "| | | | | | | |")
            continue
        b, s = scenario["baseline"], scenario["shardgrid"]
        lines.append(
            f"| {name} | {_num(b['time_to_target_s'])} | {_num(s['time_to_target_s'])} | "
            f"{_num(scenario.get('time_to_target_ratio'), '{:.2f}x', 'n/a')} | "
            f"{b['final_accuracy']:.3f} / {s['final_accuracy']:.3f} | "
            f"{b['samples_per_s']:,.0f} / {s['samples_per_s']:,.0f} | "
            f"{s.get('bytes_per_sample', 0):,.0f} | {100 * s.get('verification_overhead', 0):.1f}% | "
            f"${b['cost']['usd']:.1e} / ${s['cost']['usd']:.1e} |")
    return lines


def markdown_report(results: dict) -> str:
    machine, costs = results["machine"], results["assumptions"]["cost"]
    lines = ["# shardgrid vs centralized Ray baseline", "",
             f"Job `{results['job']}`, {results['workers']} workers, on {machine['cpus']} CPU "
             f"cores ({machine['platform']}; 1-minute load average "
             f"{machine.get('load_avg_1min_before', float('nan')):.1f} before the run, "
             f"{machine.get('load_avg_1min_after', float('nan')):.1f} after). Time to target is wall time from the first round's "
             "dispatch on an already running cluster to the first evaluation at or above the "
             "target accuracy. Both systems start that clock warm: Ray's actors are up and hold the "
             "dataset; shardgrid's workers are registered and have run a one-round warm-up job. "
             "*Cold start* is what that warming took: creating the Ray actors, and the warm-up "
             "round on shardgrid's fresh workers.", ""]
    headline = results.get("time_to_target_ratio")
    lines += [f"**Headline (clean): shardgrid needs {_num(headline, '{:.2f}x', 'n/a')} the "
              "baseline's time to target.**", ""]
    lines += ["## Summary", "", *summary_table(results), "", "## Per scenario", ""]
    for name, scenario in results["scenarios"].items():
        lines += scenario_table(name, scenario)
    lines += ["## How the figures are made", "",
              "- *bytes/sample*: everything that crosses a process boundary per training sample. "
              "Ray: parameters to every actor and updates back, through the shared-memory object "
              "store. shardgrid: " + results["bytes_note"],
              "- *verification overhead*: results computed beyond the ones the model needed "
              "(replicas, re-executions, rejected results), as a share of all computed.",
              "- *time split*: Ray's is measured (inside the actors and in the driver). "
              "shardgrid's processes report no timings, so its split is modelled: compute, "
              "aggregation and evaluation from the same functions timed in-process, "
              "verification as redundant computations plus one signature check per result; "
              "the remainder is wire, coordination and idle time.",
              f"- *cost*: baseline = a {costs['cloud_vm']} at ${costs['cloud_usd_per_hour']}/h "
              f"for the wall time; shardgrid = volunteers' extra electricity (watts per profile "
              f"{costs['profile_watts']}, coordinator {costs['coordinator_watts']} W) at "
              f"${costs['energy_usd_per_kwh']}/kWh.", ""]
    return "\n".join(lines)


def plot_scenario(name: str, scenario: dict, path: Path) -> None:
    fig, (ax_acc, ax_loss, ax_work) = plt.subplots(1, 3, figsize=(15, 4.2))
    for summary in (scenario["baseline"], scenario["shardgrid"]):
        rounds = summary["per_round"]
        wall = [r["wall_s"] for r in rounds]
        color = COLORS.get(summary["system"])
        ax_acc.plot(wall, [r["accuracy"] for r in rounds], label=summary["system"], color=color)
        ax_loss.plot(wall, [r["loss"] for r in rounds], label=summary["system"], color=color)
    target = scenario["baseline"].get("target_accuracy")
    if target:
        ax_acc.axhline(target, color="grey", linestyle=":", label=f"target {target}")
    ax_acc.set(xlabel="wall time (s)", ylabel="held-out accuracy", title=f"{name}: accuracy")
    ax_loss.set(xlabel="wall time (s)", ylabel="held-out loss", title=f"{name}: loss")
    ax_acc.legend(loc="lower right")
    ax_loss.legend(loc="upper right")
    workers = scenario["shardgrid"].get("worker_stats", [])
    labels = [(w["profile"].get("profile_name") or "worker") + f"\n{w['worker_id'][:6]}"
              + ("\nbanned" if w.get("banned") else "" if w.get("online", True) else "\nleft")
              for w in workers]
    colors = [("#c44e52" if w.get("banned") else COLORS["shardgrid"] if w.get("online", True)
               else "#999999") for w in workers]
    ax_work.bar(range(len(workers)), [w["samples"] for w in workers], color=colors)
    ax_work.set_xticks(range(len(workers)), labels, fontsize=7)
    ax_work.set(ylabel="verified samples", title=f"{name}: shardgrid work per worker")
    for i, w in enumerate(workers):
        ax_work.annotate(f"{w['shards_accepted']} shards", (i, w["samples"]), ha="center",
                         va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict, out: Path) -> list[Path]:
    """results.json, report.md and one bench-<scenario>.png per scenario that ran."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "report.md"]
    written[0].write_text(json.dumps(results, indent=1, default=float) + "\n")
    written[1].write_text(markdown_report(results))
    for name, scenario in results["scenarios"].items():
        if scenario.get("status") == "ok":
            path = out / f"bench-{name}.png"
            plot_scenario(name, scenario, path)
            written.append(path)
    return written
