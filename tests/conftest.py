import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two XLA CPU devices, as the CLI sets up on a 2-core machine: exercises seed sharding.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "2")
# One persistent compilation cache for the session (and the commands it spawns), never the
# user's: a program compiled by one test is loaded, not compiled, by the next that needs it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="vdjax-test-xla-cache-"))
# Every program, as the commands keep them (`vdjax.runtime.use_compilation_cache`).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


# The longest test files start first (`--dist loadfile` hands files to the workers in collection
# order), so that no long file is left running alone at the end of the session.
LONGEST_FILES = ("test_notebook_spirals.py", "test_scripts.py", "test_benchmarks.py", "test_images.py", "test_search.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
