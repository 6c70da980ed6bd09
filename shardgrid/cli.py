"""The `shardgrid` console script: each subcommand dispatches to the package that does the work."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

DEFAULT_COORDINATOR = "127.0.0.1:50051"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def cmd_coordinator(args) -> int:
    from scheduler.server import run

    return run(args.db, args.host, args.port)


def _preload_workloads() -> None:
    """Import scikit-learn and build the bundled dataset before registering, so the first task
    of the first job does not pay seconds of start-up (and no import runs on two threads)."""
    from worker.workloads import load_dataset

    load_dataset("digits")


def cmd_worker(args) -> int:
    from worker.agent import WorkerAgent
    from worker.behaviors import Misbehavior
    from worker.heap import settle_garbage_collector
    from worker.profile import measure_profile
    from worker.profiles import Pacing, emulated_profile, hardware_class, session_length

    hw = hardware_class(args.profile) if args.profile else None
    profile = emulated_profile(hw, measure_profile()) if hw else measure_profile()
    agent = WorkerAgent(args.coordinator, Path(args.key).expanduser(), profile,
                        max_tasks=args.max_tasks, pacing=Pacing(hw))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.request_stop())
    _preload_workloads()
    settle_garbage_collector()
    # Unseeded runs still differ per worker (noise, churn) and repeat per key.
    seed = args.seed if args.seed is not None else int(agent.worker_id[:8], 16)
    agent.misbehavior = Misbehavior(args.behavior, seed=seed, attack_after=args.attack_after)
    if args.churn:
        mean_s = args.churn_mean_s or (hw.mean_session_s if hw else 0.0)
        if mean_s <= 0:
            print("shardgrid worker: --churn needs --profile or --churn-mean-s", file=sys.stderr)
            return 2
        online_s = session_length(mean_s, seed)
        logging.getLogger("shardgrid.worker").info("churn: leaving after %.1fs online", online_s)
        timer = threading.Timer(online_s, agent.request_stop)
        timer.daemon = True
        timer.start()
    try:
        return agent.run()
    finally:
        agent.close()


def cmd_submit(args) -> int:
    from scheduler.client import JobClient
    from scheduler.spec import load_spec

    load_spec(args.spec)  # refuse a bad spec here, with the field named, before any network call
    with JobClient(args.coordinator) as client:
        job_id = client.submit(Path(args.spec).read_text())
        if not args.wait:
            print(json.dumps({"job_id": job_id}) if args.json else job_id)
            return 0
        from shardgrid.progress import follow

        figures = follow(client, job_id, quiet=args.json)
        _print_job(figures, args.json)
        return 0 if figures["status"] == "completed" else 1


def _print_job(figures: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures, sort_keys=True))
        return
    from shardgrid.progress import job_table

    job_table(figures)


def cmd_status(args) -> int:
    from scheduler.client import JobClient

    with JobClient(args.coordinator) as client:
        if args.job_id:
            _print_job(client.get(args.job_id), args.json)
            return 0
        jobs = client.list()
    if args.json:
        print(json.dumps(jobs, sort_keys=True))
    else:
        from shardgrid.progress import jobs_table

        jobs_table(jobs)
    return 0


def cmd_workers(args) -> int:
    from scheduler.client import JobClient

    with JobClient(args.coordinator) as client:
        workers = client.workers()
    if args.json:
        print(json.dumps(workers, sort_keys=True))
    else:
        from shardgrid.progress import workers_table

        workers_table(workers)
    return 0


def cmd_cluster(args) -> int:
    from deploy.local import LocalCluster

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(workdir=args.workdir, port=args.port, fleet=fleet_from_args(args))
    with cluster:
        print(f"coordinator on {cluster.address}, {len(cluster.fleet)} workers; state and logs in "
              f"{cluster.workdir}. Ctrl-C stops them all.", flush=True)
        stop.wait()
    print("cluster stopped", file=sys.stderr)
    return 0


def fleet_from_args(args) -> list[list[str]]:
    """Per-worker arguments from --mix, or --workers with the last --byzantine of them attacking."""
    from deploy.mix import parse_mix

    if args.mix:
        fleet = parse_mix(args.mix)
    else:
        fleet = [[] for _ in range(args.workers)]
    if args.byzantine > len(fleet):
        raise SystemExit(f"--byzantine {args.byzantine} exceeds the {len(fleet)} workers")
    for extra in fleet[len(fleet) - args.byzantine:]:
        extra += ["--behavior", args.attack]
    return fleet


def _fleet_flags(p: argparse.ArgumentParser, default_workers: int) -> None:
    from worker import behaviors

    p.add_argument("--workers", type=int, default=default_workers)
    p.add_argument("--mix", default=None, metavar="KIND:N,...",
                   help="fleet of emulated hardware (and behaviours), e.g. laptop-cpu:4,server:2; "
                        "replaces --workers")
    p.add_argument("--byzantine", type=int, default=0, metavar="N",
                   help="test instrument: the last N workers misbehave as --attack says")
    p.add_argument("--attack", choices=[b for b in behaviors.NAMES if b != "honest"],
                   default="sign-flip", help="test instrument: the misbehaviour of --byzantine workers")


def cmd_demo(args) -> int:
    from shardgrid.demo import run_demo

    return run_demo(fleet_from_args(args), spec_path=args.spec, as_json=args.json)


def cmd_bench(args, rest: list[str]) -> int:
    from bench.run import main as bench_main

    return bench_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardgrid", description="Verifiable training on "
                                     "volunteer hardware: coordinator, workers, jobs, benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("coordinator", help="run a coordinator until SIGINT/SIGTERM")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    p.add_argument("--db", default="./state.db", help="SQLite state file (blobs go beside it)")
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("worker", help="run a worker that pulls shards from a coordinator")
    p.add_argument("--coordinator", default=DEFAULT_COORDINATOR)
    p.add_argument("--key", default="~/.shardgrid/worker.key",
                   help="Ed25519 key file, created on first run and reused after")
    p.add_argument("--max-tasks", type=int, default=None, help="exit after this many accepted results")
    from worker import behaviors, profiles

    p.add_argument("--profile", choices=profiles.NAMES, default=None,
                   help="emulate a hardware class (slower compute and links, its reported "
                        "profile); default: this machine as measured")
    p.add_argument("--churn", action="store_true",
                   help="leave after a random session (exponential, mean from the profile)")
    p.add_argument("--churn-mean-s", type=float, default=None, metavar="S",
                   help="mean session length for --churn, overriding the profile's")
    p.add_argument("--behavior", choices=behaviors.NAMES, default="honest",
                   help="TEST INSTRUMENT: misbehave on purpose to exercise verification, "
                        "reputation and robust aggregation; see docs. Default: honest")
    p.add_argument("--attack-after", type=int, default=0, metavar="N",
                   help="TEST INSTRUMENT: behave honestly for the first N tasks")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for misbehaviour noise and churn (default: from the worker key)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("submit", help="submit a job spec (TOML)")
    p.add_argument("spec")
    p.add_argument("--coordinator", default=DEFAULT_COORDINATOR)
    p.add_argument("--wait", action="store_true", help="follow progress until the job ends")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show one job, or all jobs")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--coordinator", default=DEFAULT_COORDINATOR)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("workers", help="list workers with their profile and verified work")
    p.add_argument("--coordinator", default=DEFAULT_COORDINATOR)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workers)

    p = sub.add_parser("cluster", help="local clusters")
    csub = p.add_subparsers(dest="action", required=True)
    up = csub.add_parser("up", help="coordinator + N workers as local processes; Ctrl-C stops all")
    _fleet_flags(up, 4)
    up.add_argument("--port", type=int, default=50051)
    up.add_argument("--workdir", default=None, help="state and logs (default: a temporary folder)")
    up.set_defaults(func=cmd_cluster)

    p = sub.add_parser("demo", help="train the example job on a local cluster and summarize")
    _fleet_flags(p, 4)
    p.add_argument("--spec", default=None, help="job spec (default: deploy/jobs/digits-mlp.toml)")
    p.add_argument("--json", action="store_true", help="summary as one JSON object on the last line")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="shardgrid against a centralized Ray baseline",
                       add_help=False)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from scheduler.client import ClientError
    from scheduler.spec import SpecError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _setup_logging(args.verbose)
    try:
        if args.command == "bench":
            return args.func(args, rest)
        return args.func(args)
    except (ClientError, SpecError) as exc:
        print(f"shardgrid {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
