"""What one benchmark run would cost: rented cloud hours for the baseline, volunteer electricity
for shardgrid.

Assumptions (all overridable from the command line, and echoed into results.json):

- Baseline: one cloud VM sized like the benchmark machine runs the whole job. Default price:
  0.192 $/h, the on-demand list price of a 4-vCPU / 16 GiB general-purpose VM (AWS m6i.xlarge,
  us-east-1, Linux) -- a machine comparable to the 4 workers the comparison uses. Billed per
  second of wall time here; real clouds round up to a minute or an hour, which only widens the gap.
- shardgrid: the volunteers' hardware is already paid for, so what a run costs them is the
  *extra* electricity their devices draw while computing: watts per hardware profile times wall
  time, at a household tariff (default 0.17 $/kWh). The coordinator is counted as one more
  always-on desktop. Redundant work done for verification (replicas, re-executions) is part of
  that energy; `verification_share_usd` reports which fraction of the cost it is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from worker.profiles import CATALOG

# Extra draw under full load over idle, in watts: the emulated hardware classes carry their own;
# a worker without an emulated profile is this machine, counted as a desktop.
DESKTOP_WATTS = 65.0
DEFAULT_PROFILE_WATTS = {**{name: hw.watts for name, hw in CATALOG.items()}, "default": DESKTOP_WATTS}


@dataclass(frozen=True)
class CostAssumptions:
    cloud_usd_per_hour: float = 0.192
    cloud_vm: str = "4 vCPU / 16 GiB general-purpose VM, on-demand (m6i.xlarge list price)"
    energy_usd_per_kwh: float = 0.17
    profile_watts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PROFILE_WATTS))
    coordinator_watts: float = DESKTOP_WATTS

    def watts_for(self, profile_name: str) -> float:
        return self.profile_watts.get(profile_name or "default", self.profile_watts["default"])

    def to_dict(self) -> dict:
        return asdict(self)


def baseline_cost(wall_s: float, assumptions: CostAssumptions) -> dict[str, float]:
    """A rented VM for the run's wall time."""
    usd = assumptions.cloud_usd_per_hour * wall_s / 3600.0
    return {"usd": usd, "usd_per_hour_of_training": assumptions.cloud_usd_per_hour}


def volunteer_cost(wall_s: float, worker_profiles: list[str], verification_fraction: float,
                   assumptions: CostAssumptions) -> dict[str, float]:
    """Electricity of every worker plus the coordinator for the run's wall time.

    `verification_fraction` is the share of computed results that were redundant (replicas and
    re-executions over the results the model needed): that share of the workers' energy is the
    price of not trusting them.
    """
    worker_watts = sum(assumptions.watts_for(p) for p in worker_profiles)
    total_watts = worker_watts + assumptions.coordinator_watts
    kwh = total_watts * wall_s / 3600.0 / 1000.0
    usd = kwh * assumptions.energy_usd_per_kwh
    worker_usd = worker_watts * wall_s / 3.6e6 * assumptions.energy_usd_per_kwh
    return {"usd": usd, "kwh": kwh, "watts": total_watts,
            "usd_per_hour_of_training": total_watts / 1000.0 * assumptions.energy_usd_per_kwh,
            "verification_share_usd": worker_usd * max(0.0, verification_fraction)}
