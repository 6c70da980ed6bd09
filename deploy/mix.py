"""Fleet mixes: a short text naming how many workers of each kind a local cluster starts.

    parse_mix("laptop-cpu:4,gpu-mining-rig:2")           six workers, two hardware classes
    parse_mix("server:3,server+sign-flip:1")             three honest servers, one attacker
    parse_mix("edge-box")                                a count defaults to 1

Each entry is `NAME[+NAME...][:COUNT]`, where every NAME is a hardware profile
(worker/profiles.py) or a behaviour (worker/behaviors.py), at most one of each per entry. The
result is one list of extra `shardgrid worker` arguments per worker, in order, ready for
`LocalCluster.add_worker(extra_args)`.
"""
from __future__ import annotations

from worker import behaviors, profiles


class MixError(ValueError):
    pass


def _entry_args(kinds: str, entry: str) -> list[str]:
    profile = behavior = None
    for name in kinds.split("+"):
        name = name.strip()
        if name in profiles.CATALOG:
            if profile:
                raise MixError(f"{entry!r}: two hardware profiles ({profile}, {name})")
            profile = name
        elif name in behaviors.NAMES:
            if behavior:
                raise MixError(f"{entry!r}: two behaviours ({behavior}, {name})")
            behavior = name
        else:
            raise MixError(f"{entry!r}: {name!r} is neither a profile ({', '.join(profiles.NAMES)})"
                           f" nor a behaviour ({', '.join(behaviors.NAMES)})")
    args = ["--profile", profile] if profile else []
    return args + (["--behavior", behavior] if behavior else [])


def parse_mix(text: str) -> list[list[str]]:
    workers: list[list[str]] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        kinds, _, count_text = entry.partition(":")
        try:
            count = int(count_text) if count_text else 1
        except ValueError:
            raise MixError(f"{entry!r}: the count after ':' must be a whole number") from None
        if count < 1:
            raise MixError(f"{entry!r}: the count must be at least 1")
        args = _entry_args(kinds, entry)
        workers.extend(list(args) for _ in range(count))
    if not workers:
        raise MixError("an empty mix: name at least one worker, e.g. 'laptop-cpu:2'")
    return workers
