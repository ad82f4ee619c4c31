import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two XLA CPU devices, as the CLI sets up on a 2-core machine: exercises seed sharding.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
