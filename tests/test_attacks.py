"""The attack suite end to end: 2 of 10 worker processes misbehave, and the job still reaches the
accuracy of a clean run. (bench/attacks.py runs every attack against both defences.)"""
from __future__ import annotations

import threading

import pytest

from bench.attacks import DEFENCES, clean_reference, run_case
from scheduler.spec import load_spec, parse_spec
from tests.conftest import small_spec
from worker.agent import WorkerAgent


@pytest.mark.slow
def test_sign_flip_attackers_are_banned_under_verified_mean(tmp_path):
    """With replication and re-execution, sign-flippers are proven wrong and banned, and the
    model ends within 2 points of the clean run. The job stops early at its target, so a
    late-starting attacker may get only one chance: `ban_after = 1` makes every attacker that
    verification catches a banned one (the default of 2 is exercised by bench/attacks.py)."""
    spec = tmp_path / "verified-mean.toml"
    spec.write_text(DEFENCES["verified-mean"].read_text() + "\n[verification]\nban_after = 1\n")
    clean = clean_reference(load_spec(spec))
    case = run_case(spec, "sign-flip")
    assert case["status"] == "completed"
    assert case["final_accuracy"] >= clean["final_accuracy"] - 0.02
    assert case["attackers_banned"] == 2 and case["honest_banned"] == 0
    assert case["rejected_by_reason"].get("disagreement", 0) >= 2


@pytest.mark.slow
def test_alie_absorbed_by_trimmed_mean_without_replication():
    """Without any replication, a trimmed mean keeps 'a little is enough' attackers from
    pulling the model more than 2 points below the clean run."""
    clean = clean_reference(load_spec(DEFENCES["robust-trimmed"]))
    case = run_case(DEFENCES["robust-trimmed"], "alie")
    assert case["status"] == "completed"
    assert case["final_accuracy"] >= clean["final_accuracy"] - 0.02
    assert case["verification_overhead_pct"] == 0.0  # nothing was recomputed


def test_clean_reference_matches_a_real_run(client, tmp_path):
    """The serial clean reference is exactly what coordinator and workers compute over gRPC."""
    text = small_spec(rounds=4, shards=3, extra="[verification]\nenabled = false")
    job_id = client.submit(text)
    stop = threading.Event()
    agents = [WorkerAgent(client.address, tmp_path / f"w{i}.key", {"cores": 1}, stop=stop)
              for i in range(2)]
    threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
    for t in threads:
        t.start()
    final = client.wait(job_id)
    stop.set()
    assert final["final_accuracy"] == pytest.approx(
        clean_reference(parse_spec(text))["final_accuracy"], abs=1e-4)
