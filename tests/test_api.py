"""The public API is one list, and importing it leaves JAX's backend unstarted (so a script can
still choose its devices)."""

import os
import subprocess
import sys
from pathlib import Path

import vdjax

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_the_package_ships_its_types():
    assert sorted(vdjax.__all__) == vdjax.__all__ and len(set(vdjax.__all__)) == len(vdjax.__all__)
    for name in vdjax.__all__:
        assert getattr(vdjax, name) is not None, name
    assert (Path(vdjax.__file__).parent / "py.typed").exists()


def test_importing_vdjax_does_not_start_the_backend():
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    code = ("import vdjax, jax\nfrom vdjax.runtime import use_all_cpu_cores\nuse_all_cpu_cores()\n"
            "print(jax.local_device_count())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == (os.cpu_count() or 1)
