"""Test-wide settings: CPU only, 8 simulated devices for the sharding tests (set before JAX loads)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
