"""Where computations run: splitting the CPU into XLA devices so seeds run on every core, the
device mesh of multi-network programs, and the processes of a multi-host run.

XLA:CPU runs each operation of one program on one thread, and the spirals loop is a long
chain of small operations, so a single program keeps about one core busy. Exposing the
cores as separate XLA devices and sharding the seed axis across them lets each core run
its own seeds (6 seeds, 2 cores: 11.3 -> 6.7 ms an epoch). Batch-sharding the CNN step
did not pay (1.45 -> 2.0 s at max_depth 20), so only the seed axis is sharded.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

_FLAG = "--xla_force_host_platform_device_count"


def largest_divisor(n: int, limit: int) -> int:
    """The largest k <= limit that divides n (1 at least): how many devices can share n items evenly."""
    return max(k for k in range(1, min(limit, n) + 1) if n % k == 0)


def use_all_cpu_cores() -> None:
    """Asks for one CPU device per core (`jax_num_cpu_devices`). Effective only before JAX's
    backend starts (call it first thing in a script); a count the user already chose
    ($JAX_NUM_CPU_DEVICES, or XLA's own --xla_force_host_platform_device_count) is kept."""
    if jax.config.jax_num_cpu_devices != -1 or _FLAG in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:  # the backend has started: its devices stay as they are
        pass


CACHE_ENV = "VDJAX_COMPILATION_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vdjax" / "jax"


def use_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Keeps compiled XLA programs on disk (JAX's persistent compilation cache), so a rerun of a
    command or sweep with the same shapes loads its programs instead of compiling them again
    (benchmarks/RESULTS.md measures the second run). The directory: `path`, else
    $VDJAX_COMPILATION_CACHE ('off' disables it), else JAX's own JAX_COMPILATION_CACHE_DIR,
    else ~/.cache/vdjax/jax. Every program is stored, however quickly it compiled (JAX's default
    keeps only those over a second; the many small ones of an evaluation then compile again:
    measured, a warm rerun of a quick spirals scan 19.8 s with JAX's default, 12.3 s with every
    program kept), unless $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise. Returns
    the directory in use (None: off). Call it before the first compilation."""
    setting = str(path) if path is not None else os.environ.get(CACHE_ENV, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    current = jax.config.jax_compilation_cache_dir
    if path is None and not setting and current:
        return Path(current)  # JAX_COMPILATION_CACHE_DIR, or a caller's own choice, stays
    directory = Path(setting) if setting else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a cache is an optimisation: without one, programs compile as before
        warnings.warn(f"no compilation cache ({directory}: {e.strerror})", RuntimeWarning, stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory


def start_script() -> None:
    """First thing in a command: one XLA device per CPU core (before JAX starts) and the
    persistent compilation cache."""
    use_all_cpu_cores()
    use_compilation_cache()


def seed_devices(n_seeds: int) -> int:
    """How many local devices `n_seeds` vmapped seeds are split over: the most that divide them.
    Each device runs n_seeds / that many seeds in one vmapped batch, and that batch size changes
    the floats (other kernels), so it is part of a spirals run's id."""
    return largest_divisor(n_seeds, jax.local_device_count())


MESH_AXES = ("nets", "data")


def make_mesh(shape: tuple[int, ...], names: tuple[str, ...], devices: list) -> Mesh:
    """`jax.make_mesh` over exactly these devices, in this order (a multi-process mesh is ordered
    by process), with automatic sharding propagation on every axis: the programs are written
    for jit's sharding inference, not for explicit-sharding types."""
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def parse_mesh(text: str) -> dict[str, int]:
    """'nets=4,data=2' -> {'nets': 4, 'data': 2} (either may be left out: 1)."""
    sizes = {"nets": 1, "data": 1}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in sizes or not value.isdigit() or int(value) < 1:
            raise ValueError(f"--mesh takes 'nets=N,data=M' with positive integers, got {text!r}")
        sizes[name] = int(value)
    return sizes


def network_mesh(n_networks: int, nets: int | None = None, data: int = 1, devices=None) -> Mesh | None:
    """A ('nets', 'data') mesh of `devices` (default: this process's): networks sharded over
    `nets` devices, each network's batch over `data`. `nets=None` takes the largest count of the devices left
    that divides `n_networks`. None when it would be one device (nothing to shard)."""
    devices = list(jax.local_devices() if devices is None else devices)
    if data < 1 or len(devices) < data:
        raise ValueError(f"a data axis of {data} needs {data} devices, {len(devices)} present")
    if nets is None:
        room = len(devices) // data
        nets = largest_divisor(n_networks, room)
    if nets * data > len(devices):
        raise ValueError(f"mesh nets={nets},data={data} needs {nets * data} devices, {len(devices)} present")
    if n_networks % nets:
        raise ValueError(f"{n_networks} networks cannot be split evenly over nets={nets} devices")
    if nets * data == 1:
        return None
    return make_mesh((nets, data), MESH_AXES, devices[: nets * data])


def mesh_shardings(mesh: Mesh | None) -> tuple[NamedSharding | None, NamedSharding | None]:
    """(network-axis sharding of states, [networks, batch, ...] sharding of batches)."""
    if mesh is None:
        return None, None
    return NamedSharding(mesh, PartitionSpec("nets")), NamedSharding(mesh, PartitionSpec("nets", "data"))


def process_share(num_processes: int | None = None, process_index: int | None = None, coordinator: str | None = None,
                  distributed: bool = False, span: bool = False) -> tuple[int, int]:
    """(index, count) of this process in a grid split over processes.

    `distributed` starts JAX's distributed runtime, auto-detected where JAX detects it (Slurm,
    Open MPI, TPU VMs); `coordinator` ('host:port', with the process flags) starts it explicitly.
    Without either, `process_index` / `num_processes` split the grid with no runtime at all:
    each process trains its own share and they only meet in the shared results directory.
    `span`: the processes run every program together, each on one mesh over all their devices
    (`spanning_devices`), so there is nothing to split: (0, 1). It needs the runtime.
    """
    if span and not (coordinator or distributed):
        raise ValueError("--span-processes runs one program over several processes: it needs --distributed "
                         "or --coordinator")
    if coordinator or distributed:
        kwargs = {}
        if coordinator:
            kwargs = {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_index}
        jax.distributed.initialize(**kwargs)
        return (0, 1) if span else (jax.process_index(), jax.process_count())
    count = num_processes or 1
    index = process_index or 0
    if not 0 <= index < count:
        raise ValueError(f"--process-index must be in [0, {count}), got {index}")
    return index, count


def spanning_devices(span: bool) -> list:
    """The devices a program's mesh is built from: this process's, or (`span`) every process's,
    ordered by process, so a mesh's leading 'nets' axis crosses hosts and 'data' stays within one."""
    if not span:
        return jax.local_devices()
    return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def _is_key(a: Any) -> bool:
    return isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def gather(tree: Any) -> Any:
    """`tree` with every array that spans processes replaced by the whole of it on this process
    (numpy; PRNG keys as local key arrays), in one collective that every process must call.
    The identity in a single process, so single-process code pays nothing for it."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    spans = [i for i, a in enumerate(leaves) if isinstance(a, jax.Array) and not a.is_fully_addressable]
    if spans:
        raw = [jax.random.key_data(leaves[i]) if _is_key(leaves[i]) else leaves[i] for i in spans]
        for i, whole in zip(spans, multihost_utils.process_allgather(raw, tiled=True)):
            leaves[i] = jax.random.wrap_key_data(whole, impl=jax.random.key_impl(leaves[i])) if _is_key(leaves[i]) \
                else np.asarray(whole)
    return treedef.unflatten(leaves)


def to_host(tree: Any) -> Any:
    """`jax.device_get`, also of arrays that span processes (`gather`: every process must call it)."""
    return jax.device_get(gather(tree))


def place(tree: Any, sharding: NamedSharding | None) -> Any:
    """`jax.device_put(tree, sharding)`, also onto a mesh that spans processes: every process
    holds the same values (same seeds, same data order) and puts only its own shards
    (`jax.device_put` would all-gather each array to check that the processes agree)."""
    if sharding is None or sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(a):
        if _is_key(a):
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(one, to_host(tree))


def cpu_isa() -> str:
    """The widest x86 vector instruction set this CPU offers ('avx512', 'avx2', 'avx', 'sse'),
    or the machine name elsewhere. XLA:CPU generates different code for each, so one seed's
    floats (and after thousands of SGD steps its d_opt) differ between machines that differ here."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith(("flags", "Features"))), [])
    except OSError:
        flags = []
    for isa, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse", "sse4_2")):
        if flag in flags:
            return isa
    return platform.machine()


def numerics() -> dict[str, Any]:
    """What a run's floats depend on besides its configs, data and seeds: the backend, the
    device kind and the versions of the libraries that compile and run it. Part of every
    checkpoint's run id, so a resume never mixes numbers of two setups."""
    import flax
    import jaxlib
    import optax

    return {"platform": jax.default_backend(), "device_kind": jax.local_devices()[0].device_kind,
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "cpu_isa": cpu_isa()}


def environment() -> dict[str, Any]:
    """`numerics()` plus the machine and its device count, for results files."""
    return {**numerics(), "devices": jax.local_device_count(), "machine": platform.machine(),
            "python": platform.python_version()}
