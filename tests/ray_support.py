"""A session-wide private Ray for the tests: `ray.init` costs seconds, so every test shares one.

Use it by importing the fixture into a test module or conftest:
    from ray_support import ray_session  # noqa: F401
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A loopback-only single-node Ray (see bench.baseline.local_ray), shut down at session end."""
    from bench.baseline import local_ray

    with local_ray(num_cpus=2):
        yield
