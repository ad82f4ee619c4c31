"""Deterministic-depth networks (DDN) of every depth 0 ... 20 on spirals, beside an LDN of
max depth 20 (paper Fig 2, left, and Fig 3).

    python3 experiments/scan_deterministic_depth_spirals.py --out docs/data/spirals_redrawn/scan_deterministic_depth_spirals
    python3 experiments/scan_deterministic_depth_spirals.py --quick   # a smoke run

Cost: 22 networks (21 DDNs and one LDN) x 6 seeds, each repeat on its own data draw: 12.6 min
of recorded wall time on 2 CPU cores.

The paper finds that the depths the LDN gives most probability are those where DDNs do best,
and that the LDN's marginal beats DDNs of every depth; Fig 3 draws the functions of the LDN's
depths beside those of the deepest DDN's intermediate layers. Writes one results file per DDN
depth and one for the LDN, then fig2_posterior_vs_ddn.png and fig3_decision_functions.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None):
    p = _common.parser(__doc__, "scan_deterministic_depth_spirals")
    p.add_argument("--max-depth", type=_common.validate.non_negative_int, default=20)
    args = p.parse_args(argv)
    _common.start()
    import numpy as np

    from vdjax.studies.experiment import depth_probs, input_grid
    from vdjax.studies.plots import plot_decision_functions, plot_depth_posterior
    from vdjax.studies.spirals_study import TRIVIAL_DEPTHS, ddn_scan_posterior
    from vdjax.studies.sweeps import load_variables, record_dataset, run_grid, spirals_point

    top = min(args.max_depth, 6) if args.quick else args.max_depth
    ldn_train = _common.protocol(args)
    ddn_train = ldn_train.replace(method="ddn")
    opts = _common.point_options(args)
    ldn = spirals_point(f"ldn_max_depth={top:03d}", {"max_depth": top}, max_depth=top, train=ldn_train, **opts)
    ddns = [spirals_point(f"ddn_depth={d:03d}", {"depth": d}, max_depth=d, train=ddn_train, **opts)
            for d in range(top + 1)]
    (ldn_rec,) = run_grid([ldn], args.out, _common.seeds(args))
    ddn_recs = run_grid(ddns, args.out, _common.seeds(args))

    posterior = ddn_scan_posterior([ldn_rec, *ddn_recs])
    q = posterior.q
    plot_depth_posterior(posterior, args.out / "fig2_posterior_vs_ddn.png",
                         f"spirals: LDN q(d) (D={top}) and DDN test log-likelihood per depth", TRIVIAL_DEPTHS)

    # Fig 3: the functions of the LDN's single depths (top) and of one deep DDN's intermediate layers
    # (bottom: the output block applied to that single network's activations after d blocks), over
    # the training points of the LDN's first seed (the DDN's first seed drew the same data).
    data = record_dataset(ldn_rec, 0)
    gx, gy, pts = input_grid(data.x_train, 80)
    ldn_maps = depth_probs(ldn.model, load_variables(args.out, ldn.name)[0], pts)
    deep = ddns[-1]
    ddn_maps = depth_probs(deep.model, load_variables(args.out, deep.name)[0], pts)
    shown = sorted(set(np.linspace(0, top, min(top + 1, 8)).round().astype(int)))
    maps = [ldn_maps[d].reshape(gx.shape) for d in shown] + [ddn_maps[d].reshape(gx.shape) for d in shown]
    titles = [f"LDN, d = {d}, q = {q[0, d]:.2f}" for d in shown] + [f"DDN (D = {top}), layer {d}" for d in shown]
    plot_decision_functions([(gx, gy, m) for m in maps], titles, (data.x_train, data.y_train),
                            args.out / "fig3_decision_functions.png", ncols=len(shown))

if __name__ == "__main__":
    from vdjax.cli.validate import run_main

    sys.exit(run_main(main))
