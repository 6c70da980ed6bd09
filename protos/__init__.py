"""The wire contract: generated stubs plus the helpers both sides must agree on bit for bit."""
