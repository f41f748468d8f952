"""Benchmark: the linear probe `linear/logreg-v1` against what a user would otherwise run, scikit-learn.

    python benchmarks/bench_linear.py            # 20,000 train / 5,000 test, 1,280-d, 100 classes (slow: the naive
                                                 # sweep is 46 scikit-learn fits per repeat)
    python benchmarks/bench_linear.py --quick    # 4,000 / 1,000, 512-d, 50 classes
    python benchmarks/bench_linear.py --naive-cs 12   # time scikit-learn at 12 of the 45 C values only and
                                                      # extrapolate the sweep (stated in the output)

Data: class centres drawn from N(0, 0.15^2) per dimension, unit Gaussian noise, float32, seed 0.

What is timed, each repeat interleaved (ours, then scikit-learn), medians over repeats:

* the whole protocol: C chosen on the stratified 10 % validation split + refit on all of train + test scores, by
  `LinearProbe().evaluate` (coarse-to-fine search, float32, warm starts) versus the naive protocol: the same split,
  `LogisticRegression(C=C, max_iter=1000)` fitted from scratch at each of the 45 C values, the best validation
  top-1 (ties to the smaller C), then a refit on all of train;
* one fit at C = 0.01 on all of train, from scratch, for both.

Both sides use the machine's default thread settings (torch intra-op threads, scikit-learn's OpenMP/BLAS).
The load average is printed: on a shared machine, timings of either side can be off by a lot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness_import import ensure_harness  # noqa: E402

ensure_harness()  # the installed harness, else the checkout laid out as installed

from harness.types import Embeddings, ExecutionSettings  # noqa: E402
from harness.plugins.linear_probe import (LinearProbe, c_grid, fit_logistic_regression,  # noqa: E402
                                  validation_split)


def make_data(n_train: int, n_test: int, dim: int, classes: int, seed: int = 0
              ) -> tuple[Embeddings, Embeddings]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 0.15, (classes, dim)).astype(np.float32)

    def split(n: int, name: str) -> Embeddings:
        labels = rng.integers(0, classes, n)
        features = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32)
        return Embeddings(features, labels, np.array([f"{name}/{i}" for i in range(n)]), {})

    return split(n_train, "train"), split(n_test, "test")


def objective(x: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, c: float) -> float:
    """C * sum CE + ||W||^2 / 2 in float64 (scikit-learn's LogisticRegression objective)."""
    from scipy.special import logsumexp

    z = x.astype(np.float64) @ coef.T.astype(np.float64) + intercept
    return float(c * (logsumexp(z, axis=1) - z[np.arange(len(y)), y]).sum() + 0.5 * np.sum(coef.astype(float) ** 2))


def sklearn_fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=1000).fit(x, y)


def naive_protocol(train: Embeddings, test: Embeddings, seed: int, measured: list[int]) -> dict:
    """The protocol done with scikit-learn at the grid indices `measured` (all 45 unless a subset was asked)."""
    grid = c_grid()
    x, y = np.asarray(train.features), np.asarray(train.labels)
    fit_rows, val_rows, _ = validation_split(y, 0.1, seed)
    times, val_acc = {}, {}
    start = time.perf_counter()
    for i in measured:
        t0 = time.perf_counter()
        model = sklearn_fit(x[fit_rows], y[fit_rows], float(grid[i]))
        val_acc[i] = float(model.score(x[val_rows], y[val_rows]))
        times[i] = time.perf_counter() - t0
    chosen = min((i for i in measured if val_acc[i] == max(val_acc.values())))
    t0 = time.perf_counter()
    model = sklearn_fit(x, y, float(grid[chosen]))
    top1 = float(model.score(np.asarray(test.features), np.asarray(test.labels)))
    refit = time.perf_counter() - t0
    measured_total = time.perf_counter() - start
    # Each unmeasured C costs what the nearest measured C (in log C) cost: an estimate, labelled as such.
    estimated_sweep = sum(times[min(measured, key=lambda m: (abs(m - i), m))] for i in range(len(grid)))
    return {"wall": measured_total, "sweep_estimate": estimated_sweep + refit, "chosen": chosen, "top1": top1,
            "val": val_acc, "fit_times": times, "refit": refit, "iterations_refit": int(model.n_iter_[0])}


def our_protocol(train: Embeddings, test: Embeddings, seed: int, device: str) -> dict:
    start = time.perf_counter()
    result = LinearProbe().evaluate(train, test, seed=seed, settings=ExecutionSettings(device=device))
    wall = time.perf_counter() - start
    m = result.metrics
    return {"wall": wall, "chosen": m["chosen_C_index"], "top1": m["top1"], "fitted": m["Cs_fitted"],
            "iterations_refit": m["iterations"], "converged": m["converged"],
            "val": {round(float(np.log10(p["C"])) * 4) + 24: p["val_top1"] for p in m["val_accuracy_per_C"]}}


def single_fit(train: Embeddings, test: Embeddings, c: float, device: str) -> tuple[dict, dict]:
    x, y = np.asarray(train.features), np.asarray(train.labels)
    xt, yt = np.asarray(test.features), np.asarray(test.labels)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    coef, intercept, solution = fit_logistic_regression(x, y, c, device=device, dtype="float32", tol=1e-4)
    ours_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = sklearn_fit(x, y, c)
    sk_time = time.perf_counter() - t0
    ours = {"time": ours_time, "iterations": solution.iterations, "objective": objective(x, y, coef, intercept, c),
            "top1": float(((xt @ coef.T + intercept).argmax(1) == yt).mean())}
    theirs = {"time": sk_time, "iterations": int(model.n_iter_[0]),
              "objective": objective(x, y, model.coef_, model.intercept_, c), "top1": float(model.score(xt, yt))}
    return ours, theirs


def exact_validation_curve(train: Embeddings, seed: int, indices: list[int], device: str) -> dict[int, float]:
    """Validation top-1 of the (near-)exact minimisers, float64 and gradient tolerance 1e-7, on the same split.

    Path-independent (both protocols' solutions are only within tolerance 1e-4), so it says which C the protocol
    picks when fits are exact; used to arbitrate when ours and scikit-learn's choices differ.
    """
    import torch

    from harness.plugins.linear_probe import CentredFeatures, SoftmaxRegression, scores

    grid = c_grid()
    y = np.asarray(train.labels)
    fit_rows, val_rows, _ = validation_split(y, 0.1, seed)
    x = CentredFeatures.from_array(train.features, device=device, dtype="float64")
    problem = SoftmaxRegression(x.subset(fit_rows), y[fit_rows])
    x_val, y_val = x.subset(val_rows), torch.as_tensor(y[val_rows], device=x.device)
    accuracy, previous = {}, None
    with torch.no_grad():
        for i in indices:
            previous = problem.fit(float(grid[i]), previous, max_iter=5000, tol=1e-7)
            accuracy[i] = float((scores(x_val, previous).argmax(1) == y_val).double().mean())
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,000 train / 1,000 test, 512-d, 50 classes")
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-test", type=int)
    parser.add_argument("--dim", type=int)
    parser.add_argument("--classes", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-cs", type=int, default=45,
                        help="time scikit-learn at this many evenly spaced C values of the 45 (default all) and "
                             "extrapolate the rest from the nearest measured one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-curves", action="store_true", help="print both validation curves")
    parser.add_argument("--no-exact-check", action="store_true",
                        help="when the chosen C differ, do not refit the C values between them exactly")
    args = parser.parse_args(argv)
    sizes = (4000, 1000, 512, 50) if args.quick else (20000, 5000, 1280, 100)
    n_train = args.n_train or sizes[0]
    n_test = args.n_test or sizes[1]
    dim = args.dim or sizes[2]
    classes = args.classes or sizes[3]

    import sklearn
    import torch
    from threadpoolctl import threadpool_info

    grid = c_grid()
    measured = sorted({int(round(v)) for v in np.linspace(0, len(grid) - 1, max(2, min(args.naive_cs, 45)))})
    subset = len(measured) < len(grid)
    train, test = make_data(n_train, n_test, dim, classes, seed=0)
    pools = ", ".join(sorted({f"{pool['internal_api']}:{pool['num_threads']}" for pool in threadpool_info()}))
    print(f"linear/logreg-v1 benchmark: {n_train} train / {n_test} test, {dim}-d, {classes} classes, "
          f"seed {args.seed}, device {args.device}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__} "
          f"({pools}), "
          f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    if subset:
        print(f"scikit-learn sweep: MEASURED at {len(measured)} of 45 C values (grid indices {measured}); the "
              f"45-C sweep time is EXTRAPOLATED (each unmeasured C costs the nearest measured one's time), and its "
              f"chosen C is the best of the measured subset only")

    ours_runs, naive_runs, single_runs = [], [], []
    for repeat in range(args.repeats):
        ours_runs.append(our_protocol(train, test, args.seed, args.device))
        naive_runs.append(naive_protocol(train, test, args.seed, measured))
        single_runs.append(single_fit(train, test, 0.01, args.device))
        o, n = ours_runs[-1], naive_runs[-1]
        naive_time = n["sweep_estimate"] if subset else n["wall"]
        print(f"  repeat {repeat + 1}: ours {o['wall']:.1f}s (C={grid[o['chosen']]:.4g}, top1 {o['top1']:.4f}, "
              f"{o['fitted']} C fitted) | scikit-learn {'~' if subset else ''}{naive_time:.1f}s "
              f"(C={grid[n['chosen']]:.4g}, top1 {n['top1']:.4f}) | single fit C=0.01: ours "
              f"{single_runs[-1][0]['time']:.2f}s, scikit-learn {single_runs[-1][1]['time']:.2f}s", flush=True)

    ours_time = statistics.median(r["wall"] for r in ours_runs)
    naive_time = statistics.median((r["sweep_estimate"] if subset else r["wall"]) for r in naive_runs)
    o, n = ours_runs[-1], naive_runs[-1]
    print()
    print(f"whole protocol (C selection + refit + test), median of {args.repeats}:")
    print(f"  ours (torch L-BFGS, coarse-to-fine, {o['fitted']} of 45 C fitted): {ours_time:8.1f} s   "
          f"chosen C {grid[o['chosen']]:.4g}   test top-1 {o['top1']:.4f}   refit {o['iterations_refit']} it, "
          f"converged {o['converged']}")
    label = "extrapolated from the measured subset" if subset else "measured, all 45 C"
    print(f"  scikit-learn naive sweep ({label}): {naive_time:8.1f} s   chosen C {grid[n['chosen']]:.4g}   "
          f"test top-1 {n['top1']:.4f}   refit {n['iterations_refit']} it")
    print(f"  speed-up: {naive_time / ours_time:.1f}x   same C: {o['chosen'] == n['chosen']}"
          f"{' (within the measured subset)' if subset else ''}   "
          f"top-1 difference: {100 * (o['top1'] - n['top1']):+.2f} points")
    shared = sorted(set(o["val"]) & set(n["val"]))
    differing = [i for i in shared if abs(o["val"][i] - n["val"][i]) > 1e-12]
    print(f"  validation top-1 at the {len(shared)} C values both fitted: equal at {len(shared) - len(differing)}, "
          f"largest difference {max((abs(o['val'][i] - n['val'][i]) for i in shared), default=0) * 100:.2f} points")

    if o["chosen"] != n["chosen"] and not args.no_exact_check:
        low, high = sorted((o["chosen"], n["chosen"]))
        window = list(range(max(0, low - 1), min(len(grid), high + 2)))
        exact = exact_validation_curve(train, args.seed, window, args.device)
        best = max(exact.values())
        exact_choice = min(i for i in window if exact[i] == best)
        whose = {o["chosen"]: "ours", n["chosen"]: "scikit-learn's"}.get(exact_choice, "neither")
        print(f"  the chosen C differ; validation top-1 of exact minimisers (float64, tolerance 1e-7) from C="
              f"{grid[window[0]]:.4g} to {grid[window[-1]]:.4g}: "
              + ", ".join(f"{grid[i]:.4g}: {exact[i]:.4f}" for i in window)
              + f" -> in this window the exact protocol picks C={grid[exact_choice]:.4g} ({whose})")
    if args.show_curves:
        print("  validation top-1 per C (ours / scikit-learn):")
        for i in sorted(set(o["val"]) | set(n["val"])):
            mine = f"{o['val'][i]:.4f}" if i in o["val"] else "   -  "
            theirs = f"{n['val'][i]:.4f}" if i in n["val"] else "   -  "
            print(f"    C={grid[i]:<10.4g} {mine}  {theirs}  sklearn fit {n['fit_times'].get(i, float('nan')):.2f}s")

    ours_single = statistics.median(r[0]["time"] for r in single_runs)
    sk_single = statistics.median(r[1]["time"] for r in single_runs)
    so, ss = single_runs[-1]
    print(f"single fit at C=0.01 on all of train, from scratch, median of {args.repeats}:")
    print(f"  ours: {ours_single:.2f} s ({so['iterations']} it, objective {so['objective']:.6g}, "
          f"top-1 {so['top1']:.4f})")
    print(f"  scikit-learn: {sk_single:.2f} s ({ss['iterations']} it, objective {ss['objective']:.6g}, "
          f"top-1 {ss['top1']:.4f})")
    print(f"  speed-up: {sk_single / ours_single:.1f}x   objective relative difference "
          f"{(so['objective'] - ss['objective']) / ss['objective']:+.2e}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
