"""Image training throughput in network-steps per second: K networks in one vdjax program
(K = 1, 2, 4, 8), the same networks trained one after the other (one per program), and the
PyTorch peer on the same cores, its best two ways (one process with 2 threads; 2 processes with
1 thread each, each training half the networks). One run, same networks (the reference CNN,
LDNs, max depth D), same batch size, same number of steps per network.

    python benchmarks/image_throughput.py --out benchmarks/latest/throughput  # minutes; a quiet machine
    python benchmarks/image_throughput.py --quick                              # checks the script only
    python benchmarks/image_throughput.py --estimate                           # the paper grid on GPUs (FLOPs)

vdjax runs the image trainer's own compiled program (`fit_networks`' vmapped train step and
placement: networks over the process's devices, one XLA device per core as the image scripts
set up), fed host batches gathered from a pool of random images each step, as in training.
The PyTorch peer (`torch_ldn`) runs its ordinary per-step loop, gathering its batches the same
way, in worker processes started once. Compilation and a warm-up step are excluded. The timed
blocks are interleaved: every round times every setting once (`--steps` steps per network),
and each setting's rate is the median over `--rounds` rounds, so drifting load hits all alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # report.py renders the tables

from vdjax.cli import validate  # noqa: E402

COUNTS = (1, 2, 4, 8)
POOL = 1024  # images the batches are drawn from (also the ELBO's n_train)


# ---------------------------------------------------------------------------- vdjax


def _configs(depth: int, batch: int, shape: tuple[int, int, int], train_config=None, n_train: int = POOL):
    """The model, train config and steps per epoch of the trainer's program: the image protocol
    at this batch size unless `train_config` is given (a run's own, with its `n_train`)."""
    from vdjax.nn.models import ModelConfig
    from vdjax.training.config import IMAGE_PROTOCOL
    from vdjax.training.epoch import Batching

    tc = train_config or IMAGE_PROTOCOL.replace(batch_size=batch)
    return ModelConfig("cnn", depth, 10, shape), tc, Batching.for_size(n_train, tc.batch_size).n_batches


def initial_states(depth: int, batch: int, shape: tuple[int, int, int], n: int, train_config=None,
                   n_train: int = POOL):
    """The trainer's initial state of networks (seeds) 0..n-1, initialised once: every setting
    takes its networks from it, so all settings train the same networks (and only one
    initialisation is compiled)."""
    import jax.numpy as jnp

    from vdjax.training.objective import Objective
    from vdjax.training.runner import _compiled_init

    cfg, tc, steps = _configs(depth, batch, shape, train_config, n_train)
    return _compiled_init(Objective(cfg, tc, n_train), steps)(jnp.arange(n, dtype=jnp.uint32))


class VdjaxProgram:
    """Networks of one architecture as `vdjax.fit` trains them on the host feed: its compiled step, its
    placement on the mesh, its host-fed batches."""

    def __init__(self, depth: int, batch: int, shape: tuple[int, int, int], net, seed: int = 0,
                 train_config=None, n_train: int = POOL):
        """`net`: the initial state of the program's networks (`initial_states`, with the same
        `train_config` and `n_train`: then this is the very program that trainer run compiled)."""
        import jax
        import numpy as np

        from vdjax.runtime import mesh_shardings, place
        from vdjax.training.feeds import _compiled_step, mesh_for
        from vdjax.training.objective import Objective

        k = int(net.done.shape[0])
        self.k, self.batch, self._jax, self._place = k, batch, jax, place
        cfg, tc, steps_per_epoch = _configs(depth, batch, shape, train_config, n_train)
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(POOL, *shape)).astype(np.float32)
        self.y = rng.integers(0, 10, POOL).astype(np.int32)
        self.rng = rng
        t0 = time.perf_counter()
        on_nets, self.on_batch = mesh_shardings(mesh_for(k, {"nets": None, "data": 1}, jax.local_devices()))
        net = place(net, on_nets)
        self.train, self.done, self.methods = net.train, net.done, place(np.zeros(k, np.int32), on_nets)  # all LDNs
        self.step_fn = _compiled_step(Objective(cfg, tc, n_train), steps_per_epoch, True)
        self.run(1)  # compiles, then a warm-up step
        self.compile_s = time.perf_counter() - t0

    def run(self, steps: int) -> float:
        """Seconds for `steps` steps of every network, batches gathered on the host as in training."""
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = self.rng.integers(0, POOL, (self.k, self.batch))
            self.train, _ = self.step_fn(self.train, self.done, self.methods, self._place(self.x[idx], self.on_batch),
                                         self._place(self.y[idx], self.on_batch))
        self._jax.block_until_ready(self.train)
        return time.perf_counter() - t0

    def run_resident(self, steps: int) -> float:
        """Seconds for `steps` steps of every network on one batch already on the device: the
        compiled step alone, without the host's gathering and transfer."""
        idx = self.rng.integers(0, POOL, (self.k, self.batch))
        x, y = self._place(self.x[idx], self.on_batch), self._place(self.y[idx], self.on_batch)
        self._jax.block_until_ready((x, y))
        t0 = time.perf_counter()
        for _ in range(steps):
            self.train, _ = self.step_fn(self.train, self.done, self.methods, x, y)
        self._jax.block_until_ready(self.train)
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------- PyTorch


def torch_worker(depth: int, batch: int, shape: tuple[int, int, int], threads: int) -> None:
    """A PyTorch process serving the parent over stdin/stdout: 'PREP k first stride' builds the
    networks first, first + stride, ... < k of a k-network setting and takes one warm-up step
    each; 'RUN k steps' trains each of them `steps` steps, one network after the other, and
    answers the seconds it took."""
    import numpy as np
    import torch

    import torch_ldn

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(POOL, shape[2], shape[0], shape[1])).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, POOL))
    nets: dict[int, list] = {}

    def train(k: int, steps: int) -> None:
        for model, opt in nets[k]:
            for _ in range(steps):
                idx = torch.from_numpy(rng.integers(0, POOL, batch))
                torch_ldn.train_step(model, opt, x[idx], y[idx], POOL)

    print(f"ready {torch.__version__}", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "PREP":
            k, first, stride = map(int, args)
            nets[k] = []
            for i in range(first, k, stride):
                torch.manual_seed(i)
                model = torch_ldn.TorchLDN("cnn", depth, 10, shape[2], 64)
                nets[k].append((model, torch_ldn.make_optimizer(model)))
            train(k, 1)
            print("ok", flush=True)
        elif cmd == "RUN":
            k, steps = map(int, args)
            t0 = time.perf_counter()
            train(k, steps)
            print(f"{time.perf_counter() - t0:.6f}", flush=True)


class TorchPeer:
    """`processes` PyTorch workers with `threads` threads each, sharing every setting's networks
    round-robin; a setting's time is the wall time until the last worker is done. The workers
    start and build their networks while the caller compiles (`ready` waits for them)."""

    def __init__(self, processes: int, threads: int, depth: int, batch: int, shape: tuple[int, int, int],
                 counts: list[int]):
        import vdjax

        self.name = f"{processes}x{threads}"
        # The workers import the same vdjax as this process (a checkout may differ from the installed one).
        path = os.pathsep.join(filter(None, [str(Path(vdjax.__file__).resolve().parents[1]),
                                             os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--torch-worker", str(depth), str(batch), *map(str, shape), str(threads)]
        self.workers = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                        for _ in range(processes)]
        self._pending = 1 + len(counts)  # 'ready', then one 'ok' per setting
        for j, w in enumerate(self.workers):
            w.stdin.write("".join(f"PREP {k} {j} {processes}\n" for k in counts))
            w.stdin.flush()

    def ready(self) -> str:
        """Waits until every worker has built and warmed up its networks; PyTorch's version."""
        answers = [self._answers() for _ in range(self._pending)]
        self._pending = 0
        return answers[0][0].split()[1]

    def _answers(self) -> list[str]:
        answers = [w.stdout.readline().strip() for w in self.workers]
        if not all(answers):
            raise RuntimeError(f"a PyTorch worker of {self.name} died (exit codes {[w.poll() for w in self.workers]})")
        return answers

    def run(self, k: int, steps: int) -> float:
        t0 = time.perf_counter()
        for w in self.workers:
            w.stdin.write(f"RUN {k} {steps}\n")
            w.stdin.flush()
        self._answers()
        return time.perf_counter() - t0

    def close(self) -> None:
        for w in self.workers:
            w.stdin.close()
        for w in self.workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()


def torch_available() -> bool:
    """Whether the benchmark extra (PyTorch) is installed; it is imported only by the workers."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------------------- the run


def measure(depth: int, batch: int, shape: tuple[int, int, int], counts: list[int], steps: int, rounds: int,
            with_torch: bool) -> dict:
    """Every setting's network-steps per second (median over interleaved rounds)."""
    import jax
    import numpy as np

    from vdjax.training.runner import _take as take

    peers, times = [], {}
    cores = os.cpu_count() or 1
    try:
        if with_torch:  # started first: they import PyTorch and warm up while vdjax compiles
            peers = [TorchPeer(1, cores, depth, batch, shape, counts)]
            peers += [TorchPeer(cores, 1, depth, batch, shape, counts)] if cores > 1 else []
        nets = initial_states(depth, batch, shape, max(counts))
        programs = {k: VdjaxProgram(depth, batch, shape, take(nets, np.arange(k))) for k in counts}
        print("vdjax compile + warm-up s: " + ", ".join(f"K={k} {p.compile_s:.1f}" for k, p in programs.items()),
              flush=True)
        # One after the other: each of the largest setting's networks alone in a 1-network
        # program (one compiled step for all).
        singles = [VdjaxProgram(depth, batch, shape, take(nets, np.array([i])), seed=i) for i in range(max(counts))]
        versions = {peer.ready() for peer in peers}
        for r in range(rounds):
            for k in counts:
                times.setdefault(f"vdjax_program_{k}", []).append(programs[k].run(steps))
                for peer in peers:
                    times.setdefault(f"torch_{peer.name}_{k}", []).append(peer.run(k, steps))
            times.setdefault("vdjax_sequential", []).append(sum(p.run(steps) for p in singles) / len(singles))
            print(f"round {r + 1}/{rounds} done", flush=True)
    finally:
        for peer in peers:
            peer.close()
    rate = lambda key, k: k * steps / statistics.median(times[key])  # noqa: E731  network-steps/s
    rows = []
    for k in counts:
        row = {"networks": k, "vdjax_program": rate(f"vdjax_program_{k}", k),
               "vdjax_sequential": rate("vdjax_sequential", 1)}
        row.update({f"torch_{peer.name}": rate(f"torch_{peer.name}_{k}", k) for peer in peers})
        row["program_vs_sequential"] = row["vdjax_program"] / row["vdjax_sequential"]
        if peers:
            best = max(row[f"torch_{peer.name}"] for peer in peers)
            row.update(torch_best=best, program_vs_torch_best=row["vdjax_program"] / best)
        rows.append(row)
    return {"rows": rows, "times_s": times, "devices": len(jax.local_devices()), "torch_peers": [p.name for p in peers],
            "torch": versions.pop() if peers else None,
            "compile_s": {str(k): p.compile_s for k, p in programs.items()}}


def main(argv=None) -> dict:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, K = 1 2, one round: checks the script, not the speed")
    p.add_argument("--depth", type=validate.non_negative_int, default=10, help="max depth D (default 10)")
    p.add_argument("--batch", type=validate.positive_int, default=128, help="batch size per network (default 128)")
    p.add_argument("--steps", type=validate.positive_int, default=3,
                   help="timed steps per network per round (default 3)")
    p.add_argument("--rounds", type=validate.positive_int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--networks", type=validate.positive_int, nargs="+", default=list(COUNTS),
                   help="networks per program to measure (default 1 2 4 8)")
    p.add_argument("--no-torch", action="store_true", help="vdjax only")
    p.add_argument("--estimate", action="store_true",
                   help="print the FLOP-count estimate of the paper's image grid on 1 and 8 GPUs instead "
                        "(benchmarks/image_grid_estimate.py --flops)")
    p.add_argument("--epochs", type=validate.positive_int, default=100,
                   help="with --estimate: assumed mean epochs per network (default 100; the cap is 500)")
    p.add_argument("--out", type=validate.output_dir, default=None, help="write throughput.json and throughput.md here")
    p.add_argument("--torch-worker", nargs=6, type=validate.non_negative_int, help=argparse.SUPPRESS,
                   metavar=("D", "BATCH", "H", "W", "C", "THREADS"))  # a PyTorch worker process
    args = p.parse_args(argv)
    if args.torch_worker:
        d, batch, h, w, c, threads = args.torch_worker
        torch_worker(d, batch, (h, w, c), threads)
        return {}
    if args.estimate:
        import image_grid_estimate

        est = image_grid_estimate.flops_estimate(args.epochs)
        image_grid_estimate.print_flops(est)
        if args.out:
            from vdjax.io import write_json

            write_json(args.out / "grid_estimate.json", est)
        return est
    from vdjax.runtime import use_all_cpu_cores

    use_all_cpu_cores()  # before JAX starts: one XLA device per core, as the image scripts
    counts = validate.unique(args.networks, "--networks")
    settings = {"depth": args.depth, "batch": args.batch, "shape": [28, 28, 1], "steps": args.steps,
                "rounds": args.rounds, "networks": counts}
    if args.quick:
        settings.update(depth=1, batch=8, shape=[8, 8, 1], steps=1, rounds=1, networks=[1, 2])
    with_torch = not args.no_torch and torch_available()
    import jax

    res = measure(settings["depth"], settings["batch"], tuple(settings["shape"]), settings["networks"],
                  settings["steps"], settings["rounds"], with_torch)
    res["settings"] = settings
    res["machine"] = (f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()})"
                      + (f", torch {res['torch']}" if res["torch"] else ", no torch"))
    res["command"] = "python benchmarks/image_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from report import throughput_table

    text = throughput_table(res)
    print(text)
    if args.out:
        from vdjax.io import write_json, write_text

        write_json(args.out / "throughput.json", res)
        write_text(args.out / "throughput.md", text + "\n")
    return res


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
