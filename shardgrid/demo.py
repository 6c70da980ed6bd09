"""`shardgrid demo`: a coordinator and N worker processes on 127.0.0.1 train the example job."""
from __future__ import annotations

import json
import time
from pathlib import Path

import deploy
from deploy.local import LocalCluster
from scheduler.client import JobClient
from scheduler.spec import load_spec
from shardgrid.progress import err, follow, out

DEFAULT_SPEC = Path(deploy.__file__).parent / "jobs" / "digits-mlp.toml"


def run_demo(fleet: list[list[str]], spec_path: str | None = None, as_json: bool = False) -> int:
    """Train on a local cluster whose workers get the per-worker arguments in `fleet`."""
    spec_file = Path(spec_path) if spec_path else DEFAULT_SPEC
    spec = load_spec(spec_file)
    started = time.monotonic()
    attackers = sum("--behavior" in extra for extra in fleet)
    with LocalCluster(fleet=fleet) as cluster:
        err.print(f"coordinator on {cluster.address}, {len(fleet)} worker processes"
                  f"{f' ({attackers} misbehaving)' if attackers else ''}; training {spec.name!r}")
        with JobClient(cluster.address) as client:
            job_id = client.submit(spec_file.read_text())
            final = follow(client, job_id, quiet=False)
            worker_rows = client.workers()
    cluster.cleanup()
    summary = {
        "job_id": job_id, "status": final["status"], "rounds": final["round"],
        "final_accuracy": round(final["final_accuracy"], 4),
        "final_loss": round(final["final_loss"], 4),
        "wall_s": round(time.monotonic() - started, 2), "train_s": round(final["wall_s"], 2),
        "workers": len(worker_rows), "results_accepted": final["results_accepted"],
        "results_rejected": final["results_rejected"],
        "rejected_by_reason": final["rejected_by_reason"],
        "shards_replicated": int(final.get("shards_replicated", 0)),
        "shards_spot_checked": int(final.get("shards_spot_checked", 0)),
        "reexecutions": int(final.get("reexecutions", 0)),
        "verification_overhead_pct": final.get("verification_overhead_pct", 0.0),
        "verification_overhead_steady_pct": final.get("verification_overhead_steady_pct", 0.0),
        "banned_workers": sorted(w["worker_id"] for w in worker_rows if w["banned"]),
    }
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        out.print(f"[bold]{spec.name}[/bold]: {summary['status']} after {summary['rounds']} rounds, "
                  f"held-out accuracy {summary['final_accuracy']:.3f}, "
                  f"{summary['results_accepted']} results accepted, "
                  f"{summary['results_rejected']} rejected, {summary['workers']} workers, "
                  f"{len(summary['banned_workers'])} banned, verification overhead "
                  f"{summary['verification_overhead_pct']:.1f}%, {summary['wall_s']:.1f}s")
    return 0 if final["status"] == "completed" else 1
