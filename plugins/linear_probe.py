"""The linear probe `linear/logreg-v1`: multinomial logistic regression on frozen features (DINOv2's recipe).

The protocol, exactly:

* Model and objective: scikit-learn's ``LogisticRegression(C=C)`` (multinomial, intercept fitted and not
  penalised), i.e. minimise ``C * sum_i CE_i + 0.5 * ||W||^2`` on the raw features (no standardisation).
  scikit-learn's L-BFGS actually minimises that objective divided by ``C * n``,
  ``mean_i CE_i + ||W||^2 / (2 C n)`` (same minimiser); we do the same, and the gradient tolerance refers to it.
* C grid: ``10 ** linspace(-6, 5, 45)``. C is chosen on a stratified 10 % validation split of train
  (``StratifiedShuffleSplit(random_state=seed)``) by validation top-1, ties towards the smaller C; then the model
  is refitted on all of train with that C and scored on test.
* Stopping: at most 1,000 L-BFGS iterations; converged when the largest absolute entry of the gradient of the
  scaled objective is <= 1e-4 (scikit-learn's default ``tol``, which it applies to the same quantity).

The solver is full-batch ``torch.optim.LBFGS`` with a strong-Wolfe line search, on the evaluator's device,
float32 by default, warm-started along the C path (each C starts from the solution of the next smaller C already
solved). Two changes of *parametrisation* make it faster without changing the objective:

* Features are centred by the train mean inside the solver. Because the intercept is not penalised,
  ``x W + b == (x - mu) W + (b + mu W)`` is the same model with the same penalty, so the minimiser and the
  objective value are unchanged; only the conditioning improves (CNN features are all positive, with a large
  common mean that couples W and b). Reported coefficients are mapped back to raw-feature coordinates.
* The C search is coarse-to-fine: every 4th grid point first (12 fits), then every grid point within 3 steps of
  any coarse point whose validation accuracy is within ``refine_margin`` of the best coarse point. The chosen C
  is the best of all points fitted, so it equals the full sweep's whenever the full sweep's best point lies within
  3 steps of a coarse point that scored close to the best (asserted in the tests on real data; ``search="full"``
  runs all 45).

For two classes the model is still the two-output softmax, not scikit-learn's one-vector binomial model; the two
are the same classifier with the binomial C doubled (the penalty splits ``w`` as ``w/2, -w/2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from harness import hookimpl
from harness.errors import HarnessError
from harness.types import Embeddings, EvaluationResult, Evaluator

if TYPE_CHECKING:  # torch is imported where it is used, so `import plugins.linear_probe` stays cheap
    import torch

PROTOCOL = "linear/logreg-v1"
SEARCH_STRATEGIES = ("coarse-to-fine", "full")
DTYPES = ("float32", "float64")
#: L-BFGS memory (scikit-learn's L-BFGS-B uses 10); a solver setting, not part of the protocol's definition.
HISTORY_SIZE = 20
#: Rows per block when computing the loss, so that the (rows x classes) logits stay small on any device.
MAX_BLOCK_ELEMENTS = 1 << 25


def c_grid(log10_c_min: float = -6.0, log10_c_max: float = 5.0, num_c: int = 45) -> np.ndarray:
    """The C values of the protocol, ascending."""
    return 10.0 ** np.linspace(log10_c_min, log10_c_max, num_c)


# -- the solver ---------------------------------------------------------------------------------------------------


@dataclass
class Solution:
    """Parameters in the solver's (train-mean-centred) coordinates, with how they were obtained."""

    theta: "torch.Tensor"  # flat: W (D x K, row-major) then b (K)
    classes: np.ndarray  # the label of each of the K columns
    iterations: int
    function_evaluations: int
    converged: bool
    grad_max: float  # largest |gradient| of the scaled objective at theta
    objective_scaled: float  # mean CE + ||W||^2 / (2 C n)
    objective: float  # C * sum CE + ||W||^2 / 2  (scikit-learn's written objective)


class CentredFeatures:
    """Features copied to the device once and centred by a fixed shift (the train mean)."""

    def __init__(self, features: np.ndarray, *, device: str, dtype: str, shift: "torch.Tensor | None" = None,
                 rows: np.ndarray | None = None) -> None:
        import torch

        self.torch_dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        n = features.shape[0] if rows is None else len(rows)
        d = features.shape[1]
        self.x = torch.empty((n, d), dtype=self.torch_dtype, device=self.device)
        block = max(1, (1 << 24) // max(d, 1))
        for start in range(0, n, block):
            index = slice(start, start + block) if rows is None else rows[start:start + block]
            # np.array copies: the source may be a read-only memory map, which torch.from_numpy warns about.
            chunk = np.array(features[index], dtype=np.dtype(dtype), copy=True)
            self.x[start:start + len(chunk)] = torch.from_numpy(chunk).to(self.device, non_blocking=False)
        if shift is None:
            shift = (self.x.sum(0, dtype=torch.float64) / max(n, 1)).to(self.torch_dtype)
        self.shift = shift
        self.x -= shift

    def subset(self, rows: np.ndarray) -> "CentredFeatures":
        import torch

        other = object.__new__(CentredFeatures)
        other.torch_dtype, other.device, other.shift = self.torch_dtype, self.device, self.shift
        other.x = self.x[torch.as_tensor(rows, device=self.device)]
        return other

    def logits(self, theta: "torch.Tensor", num_classes: int) -> "torch.Tensor":
        d = self.x.shape[1]
        weights = theta[: d * num_classes].view(d, num_classes)
        return self.x @ weights + theta[d * num_classes:]


class SoftmaxRegression:
    """Multinomial logistic regression on one set of rows: objective, gradient and an L-BFGS fit at a given C."""

    def __init__(self, features: CentredFeatures, labels: np.ndarray) -> None:
        import torch

        self.features = features
        self.classes, encoded = np.unique(labels, return_inverse=True)
        if len(self.classes) < 2:
            raise HarnessError(f"the linear probe needs at least two classes in train, got {self.classes.tolist()}")
        self.y = torch.as_tensor(encoded, dtype=torch.long, device=features.device)
        self.n, self.d = features.x.shape
        self.k = len(self.classes)
        self.block = max(1, MAX_BLOCK_ELEMENTS // self.k)

    @property
    def num_parameters(self) -> int:
        return (self.d + 1) * self.k

    def zeros(self) -> "torch.Tensor":
        import torch

        return torch.zeros(self.num_parameters, dtype=self.features.torch_dtype, device=self.features.device)

    def from_solution(self, solution: Solution | None) -> "torch.Tensor":
        """Initial parameters for this problem from a solution of another C or another row set (warm start)."""
        theta = self.zeros()
        if solution is None:
            return theta
        if np.array_equal(solution.classes, self.classes):
            return theta.copy_(solution.theta)
        # Column-wise: classes that the other problem lacked start at zero.
        source_k = len(solution.classes)
        source_w = solution.theta[: self.d * source_k].view(self.d, source_k)
        source_b = solution.theta[self.d * source_k:]
        w = theta[: self.d * self.k].view(self.d, self.k)
        b = theta[self.d * self.k:]
        position = {label: j for j, label in enumerate(solution.classes.tolist())}
        for j, label in enumerate(self.classes.tolist()):
            if label in position:
                w[:, j] = source_w[:, position[label]]
                b[j] = source_b[position[label]]
        return theta

    def loss_and_grad(self, theta: "torch.Tensor", c: float, grad_out: "torch.Tensor | None" = None
                      ) -> tuple[float, float, "torch.Tensor"]:
        """(scaled objective, sum of cross-entropies, gradient of the scaled objective)."""
        import torch

        x, y, n, d, k = self.features.x, self.y, self.n, self.d, self.k
        weights = theta[: d * k].view(d, k)
        bias = theta[d * k:]
        grad = torch.zeros_like(theta) if grad_out is None else grad_out.zero_()
        grad_w = grad[: d * k].view(d, k)
        grad_b = grad[d * k:]
        ce_sum = torch.zeros((), dtype=torch.float64, device=theta.device)
        for start in range(0, n, self.block):
            xb, yb = x[start:start + self.block], y[start:start + self.block]
            logits = torch.addmm(bias, xb, weights)
            lse = torch.logsumexp(logits, dim=1)
            ce_sum += lse.sum(dtype=torch.float64) - logits.gather(1, yb[:, None]).sum(dtype=torch.float64)
            # softmax - onehot, in place in the logits buffer
            probs = logits.sub_(lse[:, None]).exp_()
            probs[torch.arange(len(yb), device=probs.device), yb] -= 1.0
            grad_w.addmm_(xb.T, probs)
            grad_b += probs.sum(0)
        lam = 1.0 / (c * n)
        grad.div_(n)
        grad_w.add_(weights, alpha=lam)
        sq_norm = float(torch.dot(weights.reshape(-1), weights.reshape(-1)).double())
        ce = float(ce_sum)
        return ce / n + 0.5 * lam * sq_norm, ce, grad

    def objective(self, theta: "torch.Tensor", c: float) -> tuple[float, float, float]:
        """(scaled objective, written objective C*sum CE + ||W||^2/2, max |gradient of the scaled objective|)."""
        scaled, ce, grad = self.loss_and_grad(theta, c)
        return scaled, scaled * c * self.n, float(grad.abs().max())

    def fit(self, c: float, init: Solution | None, *, max_iter: int, tol: float) -> Solution:
        import torch

        theta = self.from_solution(init).requires_grad_(False)
        param = torch.nn.Parameter(theta, requires_grad=True)
        grad_buffer = torch.zeros_like(theta)
        optimizer = torch.optim.LBFGS(
            [param], lr=1.0, max_iter=max_iter, max_eval=15 * max_iter, tolerance_grad=tol,
            # Stop early only when the loss or the step does not move at all (stagnation at the precision floor);
            # otherwise the gradient test or max_iter ends the fit, as in scikit-learn.
            tolerance_change=1e-300,
            history_size=HISTORY_SIZE, line_search_fn="strong_wolfe")

        def closure() -> "torch.Tensor":
            loss, _, grad = self.loss_and_grad(param.detach(), c, grad_buffer)
            param.grad = grad
            return torch.tensor(loss, dtype=torch.float64)

        with torch.no_grad():
            optimizer.step(closure)
        state = optimizer.state[param]
        solution_theta = param.detach().clone()
        scaled, written, grad_max = self.objective(solution_theta, c)
        return Solution(theta=solution_theta, classes=self.classes, iterations=int(state.get("n_iter", 0)),
                        function_evaluations=int(state.get("func_evals", 0)), converged=grad_max <= tol,
                        grad_max=grad_max, objective_scaled=scaled, objective=written)

    def raw_coefficients(self, solution: Solution) -> tuple[np.ndarray, np.ndarray]:
        """(coef (K, D), intercept (K,)) in raw-feature coordinates, laid out as scikit-learn's."""
        d, k = self.d, len(solution.classes)
        weights = solution.theta[: d * k].view(d, k).double()
        bias = solution.theta[d * k:].double() - self.features.shift.double() @ weights
        return weights.T.cpu().numpy(), bias.cpu().numpy()


def scores(features: CentredFeatures, solution: Solution) -> "torch.Tensor":
    """Logits of every row for the solution's classes (columns in `solution.classes` order)."""
    return features.logits(solution.theta, len(solution.classes))


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, c: float, *, device: str = "cpu",
                            dtype: str = "float64", max_iter: int = 1000, tol: float = 1e-4
                            ) -> tuple[np.ndarray, np.ndarray, Solution]:
    """One fit at one C, as scikit-learn's ``LogisticRegression(C=c).fit`` would do it; for tests and benchmarks.

    Returns (coef (K, D), intercept (K,), solution), coefficients in raw-feature coordinates.
    """
    problem = SoftmaxRegression(CentredFeatures(features, device=device, dtype=dtype), np.asarray(labels))
    solution = problem.fit(c, None, max_iter=max_iter, tol=tol)
    coef, intercept = problem.raw_coefficients(solution)
    return coef, intercept, solution


# -- the C search -------------------------------------------------------------------------------------------------


def search_plan(num_c: int, stride: int) -> list[int]:
    """The coarse grid indices: every `stride`-th point, always including both ends."""
    coarse = list(range(0, num_c, stride))
    if coarse[-1] != num_c - 1:
        coarse.append(num_c - 1)
    return coarse


def select_c_index(evaluate: Callable[[int], int], num_c: int, *, strategy: str, stride: int,
                   refine_margin: int) -> tuple[int, dict[int, int]]:
    """Pick the grid index with the most correct validation predictions, ties towards the smaller C.

    `evaluate(i)` fits grid point i and returns its number of correct validation predictions; it is called in
    ascending order of i within each pass, so that warm starts go from smaller to larger C. `refine_margin` is in
    correct predictions: coarse points within it of the best coarse point get their neighbours fitted too.
    Returns (chosen index, {index: correct} for every index fitted).
    """
    if strategy not in SEARCH_STRATEGIES:
        raise HarnessError(f"unknown C search {strategy!r}; use one of {SEARCH_STRATEGIES}")
    correct: dict[int, int] = {}
    first_pass = list(range(num_c)) if strategy == "full" or stride <= 1 else search_plan(num_c, stride)
    for i in first_pass:
        correct[i] = evaluate(i)
    if strategy != "full" and stride > 1:
        best = max(correct.values())
        centres = [i for i in first_pass if correct[i] >= best - refine_margin]
        refine = sorted({j for i in centres for j in range(i - stride + 1, i + stride)
                         if 0 <= j < num_c and j not in correct})
        for j in refine:
            correct[j] = evaluate(j)
    best = max(correct.values())
    chosen = min(i for i, value in correct.items() if value == best)
    return chosen, correct


# -- the evaluator ------------------------------------------------------------------------------------------------


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(fit rows, validation rows, how): a stratified split; classes with one item stay in the fit part."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    singletons = np.isin(labels, classes[counts < 2])
    rest = np.flatnonzero(~singletons)
    how = "stratified"
    if len(rest) < 2:
        raise HarnessError(f"train has {n} labelled items; the linear probe needs a validation split to choose C")
    try:
        fit_rel, val_rel = next(StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
                                .split(np.zeros(len(rest)), labels[rest]))
    except ValueError as error:  # e.g. fewer validation items than classes: fall back, and say so in the record
        fit_rel, val_rel = next(ShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
                                .split(np.zeros(len(rest))))
        how = f"random (stratified split impossible: {error})"
    fit_rows = np.sort(np.concatenate([rest[fit_rel], np.flatnonzero(singletons)]))
    return fit_rows, np.sort(rest[val_rel]), how


def _class_names(test: Embeddings, train: Embeddings, num_classes: int) -> list[str]:
    names = list(test.meta.get("class_names") or train.meta.get("class_names") or [])
    return [str(names[i]) if i < len(names) else str(i) for i in range(num_classes)]


class LinearProbe(Evaluator):
    """Logistic-regression probe `linear/logreg-v1`: C chosen on a 10 % split of train, refit, test accuracy."""

    name = "linear"
    protocol = PROTOCOL
    needs = ("train", "test")
    requires_labels = True

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            "log10_c_min": -6.0,
            "log10_c_max": 5.0,
            "num_c": 45,
            "val_fraction": 0.1,
            "max_iter": 1000,
            "tolerance": 1e-4,  # max |gradient| of mean CE + ||W||^2/(2Cn), as scikit-learn's `tol`
            "search": "coarse-to-fine",
            "coarse_stride": 4,
            "refine_margin": 0.01,  # fraction of the validation set (at least one item)
            "dtype": "float32",
        }

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int, device: str) -> EvaluationResult:
        import torch

        o = self.options
        if train is None:
            raise HarnessError("the linear probe needs the train split")
        if o["dtype"] not in DTYPES:
            raise HarnessError(f"linear probe dtype must be one of {DTYPES}, not {o['dtype']!r}")
        grid = c_grid(o["log10_c_min"], o["log10_c_max"], o["num_c"])
        train_labels = np.asarray(train.labels).astype(np.int64)
        labelled = np.flatnonzero(train_labels >= 0)
        if len(labelled) < len(train_labels):
            train_labels = train_labels[labelled]
        else:
            labelled = None
        test_labels = np.asarray(test.labels).astype(np.int64)
        if not (test_labels >= 0).any():
            raise HarnessError("the test split has no labels; the linear probe needs them")

        with torch.no_grad():
            x_train = CentredFeatures(train.features, device=device, dtype=o["dtype"], rows=labelled)
            fit_rows, val_rows, split_how = validation_split(train_labels, o["val_fraction"], seed)
            fit_problem = SoftmaxRegression(x_train.subset(fit_rows), train_labels[fit_rows])
            x_val = x_train.subset(val_rows)
            y_val = torch.as_tensor(train_labels[val_rows], device=x_train.device)

            solutions: dict[int, Solution] = {}

            def evaluate_c(i: int) -> int:
                below = [j for j in solutions if j < i]
                init = solutions[max(below)] if below else None
                solution = fit_problem.fit(float(grid[i]), init, max_iter=o["max_iter"], tol=o["tolerance"])
                solutions[i] = solution
                classes = torch.as_tensor(solution.classes, device=x_train.device)
                predicted = classes[scores(x_val, solution).argmax(1)]
                return int((predicted == y_val).sum())

            margin = max(1, int(math.floor(o["refine_margin"] * len(val_rows))))
            chosen, correct = select_c_index(evaluate_c, len(grid), strategy=o["search"],
                                             stride=int(o["coarse_stride"]), refine_margin=margin)
            del fit_problem, x_val

            refit_problem = SoftmaxRegression(x_train, train_labels)
            final = refit_problem.fit(float(grid[chosen]), solutions[chosen], max_iter=o["max_iter"],
                                      tol=o["tolerance"])
            x_test = CentredFeatures(test.features, device=device, dtype=o["dtype"], shift=x_train.shift)
            del x_train, refit_problem
            logits = scores(x_test, final)
            top_k = min(5, logits.shape[1])
            ranked = torch.as_tensor(final.classes, device=logits.device)[logits.topk(top_k, dim=1).indices]
            ranked = ranked.cpu().numpy().astype(np.int64)

        prediction = ranked[:, 0]
        top5 = np.full((len(prediction), 5), -1, dtype=np.int64)
        top5[:, :top_k] = ranked
        num_classes = max(int(train_labels.max()), int(test_labels.max())) + 1
        num_classes = max(num_classes, len(test.meta.get("class_names") or []))
        metrics = self._metrics(test_labels, prediction, top5, _class_names(test, train, num_classes))
        metrics.update({
            "chosen_C": float(grid[chosen]),
            "chosen_C_index": int(chosen),
            "val_accuracy_per_C": [
                {"C": float(grid[i]), "val_top1": correct[i] / len(val_rows),
                 "iterations": solutions[i].iterations, "converged": solutions[i].converged}
                for i in sorted(correct)],
            "val_size": int(len(val_rows)),
            "fit_size": int(len(fit_rows)),
            "val_split": split_how,
            "Cs_fitted": len(correct),
            "iterations": final.iterations,
            "function_evaluations": final.function_evaluations,
            "converged": final.converged,
            "final_grad_max": final.grad_max,
            "objective": final.objective,
            "objective_scaled": final.objective_scaled,
            "val_fraction": float(o["val_fraction"]),
            "max_iter": int(o["max_iter"]),
            "tolerance": float(o["tolerance"]),
            "tolerance_definition": "max |gradient| of mean cross-entropy + ||W||^2/(2 C n), w.r.t. (W, b)",
            "search": o["search"],
            "dtype": o["dtype"],
            "classes_in_model": int(len(final.classes)),
        })
        return EvaluationResult(
            metrics=metrics, main_score=metrics["top1"], main_metric="top1",
            predictions={"ids": np.asarray(test.ids), "label": test_labels, "prediction": prediction, "top5": top5})

    @staticmethod
    def _metrics(labels: np.ndarray, prediction: np.ndarray, top5: np.ndarray, names: Sequence[str]
                 ) -> dict[str, Any]:
        known = labels >= 0
        labels, prediction, top5 = labels[known], prediction[known], top5[known]
        hit = prediction == labels
        metrics: dict[str, Any] = {"top1": float(hit.mean()), "null_reasons": {}}
        if len(names) < 5 or (top5 < 0).any():
            metrics["top5"] = None
            metrics["null_reasons"]["top5"] = "fewer than 5 classes in the model"
        else:
            metrics["top5"] = float((top5 == labels[:, None]).any(1).mean())
        per_class = {}
        for index in np.unique(labels):
            mask = labels == index
            per_class[names[index]] = float(hit[mask].mean())
        metrics["per_class_accuracy"] = per_class
        # sklearn's balanced_accuracy_score: the mean recall over the classes present in the test labels
        metrics["balanced_accuracy"] = float(np.mean(list(per_class.values())))
        metrics["test_size"] = int(len(labels))
        if not metrics["null_reasons"]:
            del metrics["null_reasons"]
        return metrics


@hookimpl
def register_evaluators(register: Callable[..., None]) -> None:
    register("linear", LinearProbe,
             "Logistic-regression probe (linear/logreg-v1): C chosen on a 10% split, L-BFGS in torch")
