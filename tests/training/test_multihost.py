"""One program over two processes (JAX's distributed runtime, CPU collectives over Gloo) trains
exactly what one process trains, and resumes from the checkpoint they wrote together."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300  # a process left waiting for its peer must fail the test, not hang CI

# Trains two LDNs of a small MLP for 3 epochs with each network's batch split over the mesh's
# two devices: one of each process (--span) or both of one process. The spanning run is killed
# after epoch 1 and resumed from its checkpoint. Prints what the networks end with.
_WORKER = """
import json, sys
import numpy as np
import jax
from vdjax.runtime import process_share
port, index, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
span = index >= 0
if span:
    assert process_share(2, index, f"localhost:{port}", span=True) == (0, 1)
from vdjax.data.core import Dataset
from vdjax.nn.models import ModelConfig
from vdjax import IMAGE_PROTOCOL, RunOptions, fit
rng = np.random.default_rng(0)
x, xt = rng.normal(size=(96, 2)).astype(np.float32), rng.normal(size=(32, 2)).astype(np.float32)
data = Dataset("tiny", x, (x[:, 0] > 0).astype(np.int32), xt, (xt[:, 0] > 0).astype(np.int32), 2)
tc = IMAGE_PROTOCOL.replace(batch_size=32, max_epochs=3, lr_drop_epoch=None, learning_rate=0.05)
cfg = ModelConfig("mlp", 3, 2, (2,), width=8)
members, mesh = [("ldn", 0), ("ldn", 1)], {"nets": 1, "data": 2}
options = RunOptions(checkpoint_dir=out + "/ckpt" if span else None, mesh=mesh, span_processes=span,
                     log=lambda s: None)
if span:
    part = fit(cfg, tc, data, members, options.replace(stop_after_epochs=1))
    assert [part.summary(i)["epochs"] for i in range(2)] == [1, 1]
run = fit(cfg, tc, data, members, options)
kept = [run.best_state(i) for i in range(2)]
print("RESULT" + json.dumps({
    "process": jax.process_index(), "processes": jax.process_count(),
    "devices": [len(jax.local_devices()), len(jax.devices())], "resumed": [run.resumed_from] * 2,
    "runs": [{"q": np.asarray(s.q).tolist(), "best_epoch": run.summary(i)["best_epoch"],
              "epochs": run.summary(i)["epochs"], "stopped": run.stopped(i),
              "history": [{k: v for k, v in h.items() if k != "seconds"} for h in run.histories[i]],
              "params": [np.asarray(a).tolist() for a in jax.tree_util.tree_leaves(s.params)],
              "batch_stats": [np.asarray(a).tolist() for a in jax.tree_util.tree_leaves(s.batch_stats)]}
             for i, s in enumerate(kept)]}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(args: list[str], devices: int) -> subprocess.Popen:
    """A worker importing this checkout's vdjax (not an installed one) on `devices` CPU devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "JAX_NUM_CPU_DEVICES": str(devices)}
    return subprocess.Popen([sys.executable, "-c", _WORKER, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen], deadline: float) -> list[str]:
    """Every process's output. When one fails or the deadline passes, all are killed (a process
    waiting for a dead peer would wait forever) and the test fails showing every log."""
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs += [q.communicate()[0] for q in procs[len(logs):]]
            pytest.fail(f"timed out after {TIMEOUT_S} s:\n" + "\n---\n".join(log[-3000:] for log in logs))
        if p.returncode:
            for q in procs:
                q.kill()
            logs += [q.communicate()[0] for q in procs[len(logs):]]
            pytest.fail("a worker failed:\n" + "\n---\n".join(f"exit {q.returncode}:\n{log[-3000:]}"
                                                             for q, log in zip(procs, logs)))
    return logs


def _result(log: str) -> dict:
    return json.loads(log.split("RESULT")[-1])


def test_one_program_over_two_processes_equals_one_process(tmp_path):
    """Two processes with one CPU device each train one program whose networks' batches are split
    across them (BatchNorm moments and gradients summed by Gloo across the processes); one
    process with two devices trains the same program. Everything is equal bit for bit: both run
    the same partitioned program on the same shards, and a sum over two devices has only one
    order (a + b = b + a), so crossing processes adds no rounding. The spanning run also stops
    after epoch 1 and resumes from the checkpoint the two processes saved (Orbax, multi-process)."""
    deadline = time.monotonic() + TIMEOUT_S
    port = str(_free_port())
    procs = [_launch([port, str(i), str(tmp_path / "span")], devices=1) for i in (0, 1)]
    procs.append(_launch([port, "-1", str(tmp_path / "one")], devices=2))
    span0, span1, one = (_result(log) for log in _finish(procs, deadline))
    assert (span0["process"], span1["process"], span0["processes"], one["processes"]) == (0, 1, 2, 1)
    assert span0["devices"] == [1, 2] and one["devices"] == [2, 2]
    assert span0["resumed"] == [1, 1] and one["resumed"] == [None, None]
    for a, b in zip(span0["runs"], one["runs"]):
        assert a["epochs"] == 3 and a["history"] and len(a["history"]) == 3
    assert span0["runs"] == span1["runs"] == one["runs"]


def test_spanning_needs_the_distributed_runtime():
    from vdjax.runtime import process_share

    with pytest.raises(ValueError, match="--span-processes .* needs --distributed or --coordinator"):
        process_share(2, 0, span=True)
