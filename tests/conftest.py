import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two XLA CPU devices, as the CLI sets up on a 2-core machine: exercises seed sharding.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
# One persistent compilation cache for the session (and the commands it spawns), never the
# user's: a program compiled by one test is loaded, not compiled, by the next that needs it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="vdjax-test-xla-cache-"))
