"""Terminal output for the CLI: a progress bar that follows a job, and tables. Display only."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

err = Console(stderr=True)
out = Console()


def follow(client, job_id: str, quiet: bool = False) -> dict:
    """Follow a job to its end with one bar over its rounds; returns the final figures."""
    console = Console(stderr=True, quiet=quiet)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}"),
               TimeElapsedColumn())
    last = None
    with Progress(*columns, console=console, transient=False) as progress:
        bar = None
        for event in client.watch(job_id):
            job = event["job"]
            last = job
            if bar is None:
                bar = progress.add_task(f"{job['name']} ({job_id})", total=job["rounds_total"],
                                        loss=0.0, acc=0.0)
            summary = event["round"]
            if summary is not None:
                progress.update(bar, completed=summary["round"] + 1, loss=summary["loss"],
                                acc=summary["accuracy"])
            if job["status"] != "running":
                progress.update(bar, description=f"{job['name']} ({job['status']})")
    return last if last is not None else client.get(job_id)


def job_table(figures: dict) -> None:
    table = Table(title=f"job {figures['job_id']}", show_header=False)
    for key in ("name", "status", "round", "final_accuracy", "final_loss", "wall_s", "workers",
                "results_accepted", "results_rejected", "waiting_for", "error"):
        value = figures.get(key)
        if value in ("", None):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for reason, count in sorted(figures.get("rejected_by_reason", {}).items()):
        table.add_row(f"  rejected: {reason}", str(count))
    out.print(table)


def jobs_table(jobs: list[dict]) -> None:
    table = Table("job", "name", "status", "round", "accuracy", "waiting for")
    for job in jobs:
        table.add_row(job["job_id"], job["name"], job["status"],
                      f"{job['round']}/{job['rounds_total']}", f"{job['final_accuracy']:.3f}",
                      job["waiting_for"])
    out.print(table)


def workers_table(workers: list[dict]) -> None:
    table = Table("worker", "profile", "GFLOP/s", "seen GFLOP/s", "online", "reputation", "shards",
                  "samples", "credits", "banned")
    for w in workers:
        profile = w["profile"]
        table.add_row(w["worker_id"], profile.get("profile_name") or profile.get("device_class", ""),
                      f"{profile.get('gflops', 0):.1f}", f"{w['observed_gflops']:.3f}",
                      "yes" if w["online"] else "no",
                      f"{w['reputation']:.2f}", str(w["shards_accepted"]), str(w["samples"]),
                      f"{w['credits']:.3f}", "BANNED" if w["banned"] else "")
    out.print(table)
