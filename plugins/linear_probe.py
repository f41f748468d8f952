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
  scaled objective, with respect to (W, b) of the train-mean-centred features, is <= 1e-4 (scikit-learn's default
  ``tol``, which it applies to the same objective in raw-feature coordinates). At large C the penalty term of the
  scaled objective is tiny, so a point that meets the tolerance can still be far from the minimiser: a
  warm-started fit may stop after few or no iterations where a fit from zero stops elsewhere. Both meet the
  protocol; their validation accuracies at large C can differ by a few items.

The solver is full-batch ``torch.optim.LBFGS`` with a strong-Wolfe line search, on the evaluator's device,
float32 by default (``dtype="float64"`` on request), and three choices make it fast without changing the objective:

* Warm starts along the C path. The grid is read as coarse points (every 4th: indices 0, 4, ..., 44) and the
  points between them. Each coarse point starts from the solution of the coarse point below it (the first from
  W = 0 and b = log class frequencies, the exact solution as C -> 0); every other point starts from the coarse
  point just below it. The refit on all of train starts from the chosen C's solution on the split.
* The C search is coarse-to-fine: the 12 coarse points first, then every point within 3 steps of any coarse point
  whose validation accuracy is within ``refine_margin`` (1 % of the validation set, at least two items) of the
  best coarse point. Because both searches use the warm-start rule above, the full 45-point sweep
  (``search="full"``) computes bit-identical solutions at the points they share; coarse-to-fine returns the full
  sweep's C whenever the full sweep's best point lies in a refined window (checked in the tests on real data).
  A fit whose starting point already meets the tolerance returns it unchanged without touching the data (see
  ``SoftmaxRegression.fit``), so the flat large-C end of the path costs almost nothing.
* Features are centred by the train mean inside the solver. Because the intercept is not penalised,
  ``x W + b == (x - mu) W + (b + mu W)`` is the same model with the same penalty, so the minimiser and the
  objective value are unchanged; only the conditioning improves (CNN features are all positive, with a large
  common mean that couples W and b). Coefficients handed out are mapped back to raw-feature coordinates.

Features larger than the memory budget (`memory_budget_mb`, an execution setting, default from the device) are
not copied to the device: `StreamedFeatures` reads them from the memory map in chunks for every objective and
gradient, which are sums over rows, so the objective, the solver and the solution are the same (the sums are
accumulated chunk by chunk); `streaming=True/False` forces either way.

For two classes the model is still the two-output softmax, not scikit-learn's one-vector binomial model; the two
are the same classifier with the binomial C doubled (the penalty splits ``w`` as ``w/2, -w/2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from harness import hookimpl
from harness.errors import HarnessError
from harness.memory import budget_bytes
from harness.types import Embeddings, EvaluationResult, Evaluator

if TYPE_CHECKING:  # torch is imported where it is used, so `import harness.plugins.linear_probe` stays cheap
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
    #: (problem, sum CE, gradient of mean CE) at theta, kept so that a fit at another C that starts here can run
    #: L-BFGS's first convergence test without evaluating the data term again (see `SoftmaxRegression.fit`).
    data_term: "tuple[Any, float, torch.Tensor] | None" = field(default=None, repr=False)


class CentredFeatures:
    """Rows of features on the device, shifted by a fixed vector (the train mean); see the module docstring."""

    def __init__(self, x: "torch.Tensor", shift: "torch.Tensor") -> None:
        self.x = x
        self.shift = shift
        self.torch_dtype = x.dtype
        self.device = x.device

    @classmethod
    def from_array(cls, features: np.ndarray, *, device: str, dtype: str, shift: "torch.Tensor | None" = None,
                   rows: np.ndarray | None = None) -> "CentredFeatures":
        """Copy `features` (or its `rows`) to the device in blocks, centred by `shift` (default: their own mean).

        `features` may be a read-only memory map: it is read block by block, never written, never copied whole
        on the host.
        """
        import torch

        torch_dtype = getattr(torch, dtype)
        n = features.shape[0] if rows is None else len(rows)
        d = features.shape[1]
        x = torch.empty((n, d), dtype=torch_dtype, device=device)
        block = max(1, (1 << 24) // max(d, 1))
        for start in range(0, n, block):
            index = slice(start, start + block) if rows is None else rows[start:start + block]
            # np.array copies the block: torch.from_numpy warns about (and must not write to) read-only memory.
            chunk = np.array(features[index], dtype=np.dtype(dtype), copy=True)
            x[start:start + len(chunk)] = torch.from_numpy(chunk).to(x.device)
        if shift is None:
            shift = (x.sum(0, dtype=torch.float64) / max(n, 1)).to(torch_dtype)
        x -= shift
        return cls(x, shift)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)  # type: ignore[return-value]

    def row_blocks(self, block: int) -> "Iterator[torch.Tensor]":
        """Consecutive blocks of at most `block` rows, in order (views: nothing is copied)."""
        for start in range(0, self.x.shape[0], block):
            yield self.x[start:start + block]

    def subset(self, rows: np.ndarray) -> "CentredFeatures":
        import torch

        return CentredFeatures(self.x[torch.as_tensor(rows, device=self.device)], self.shift)

    def logits(self, theta: "torch.Tensor", num_classes: int) -> "torch.Tensor":
        d = self.x.shape[1]
        weights = theta[: d * num_classes].view(d, num_classes)
        return self.x @ weights + theta[d * num_classes:]


class StreamedFeatures:
    """The same rows as `CentredFeatures`, never held whole: read from the (memory-mapped) array in chunks.

    For features larger than the device's budget. Every pass over the data (each objective and gradient of
    L-BFGS, each scoring) reads the rows again, `chunk_rows` at a time, copies them to the device in the solver's
    dtype and centres them there: the same values as `CentredFeatures` holds, so the objective is the same, its
    sum over rows accumulated chunk by chunk. Memory: one chunk, whatever N.
    """

    def __init__(self, source: np.ndarray, rows: np.ndarray | None, shift: "torch.Tensor", *, device: str,
                 dtype: str, chunk_rows: int) -> None:
        self.source, self.rows, self.shift = source, rows, shift
        self.device, self.dtype, self.chunk_rows = device, dtype, max(1, int(chunk_rows))
        self.torch_dtype = shift.dtype

    @classmethod
    def from_array(cls, features: np.ndarray, *, device: str, dtype: str, chunk_rows: int,
                   shift: "torch.Tensor | None" = None, rows: np.ndarray | None = None) -> "StreamedFeatures":
        """As `CentredFeatures.from_array`; the mean, when not given, is summed over the chunks in float64."""
        import torch

        streamed = cls(features, rows, torch.zeros(features.shape[1], dtype=getattr(torch, dtype), device=device),
                       device=device, dtype=dtype, chunk_rows=chunk_rows)
        if shift is None:
            total = torch.zeros(features.shape[1], dtype=torch.float64, device=device)
            for chunk in streamed._raw_chunks(streamed.chunk_rows):
                total += chunk.sum(0, dtype=torch.float64)
            shift = (total / max(streamed.shape[0], 1)).to(streamed.torch_dtype)
        streamed.shift = shift
        return streamed

    @property
    def shape(self) -> tuple[int, int]:
        return (self.source.shape[0] if self.rows is None else len(self.rows), self.source.shape[1])

    def _raw_chunks(self, block: int) -> "Iterator[torch.Tensor]":
        import torch

        for start in range(0, self.shape[0], block):
            index = slice(start, start + block) if self.rows is None else self.rows[start:start + block]
            # np.array copies the rows: torch.from_numpy must not alias (or write to) a read-only memory map.
            chunk = np.array(self.source[index], dtype=np.dtype(self.dtype), copy=True)
            yield torch.from_numpy(chunk).to(self.device)

    def row_blocks(self, block: int) -> "Iterator[torch.Tensor]":
        for chunk in self._raw_chunks(block):
            yield chunk.sub_(self.shift)

    def subset(self, rows: np.ndarray) -> "StreamedFeatures":
        rows = np.asarray(rows)
        composed = rows if self.rows is None else self.rows[rows]
        return StreamedFeatures(self.source, composed, self.shift, device=self.device, dtype=self.dtype,
                                chunk_rows=self.chunk_rows)

    def logits(self, theta: "torch.Tensor", num_classes: int) -> "torch.Tensor":
        import torch

        d = self.shape[1]
        weights = theta[: d * num_classes].view(d, num_classes)
        return torch.cat([xb @ weights + theta[d * num_classes:] for xb in self.row_blocks(self.chunk_rows)])


def streaming_plan(n: int, d: int, k: int, dtype: str, budget: int) -> dict[str, Any]:
    """Whether the linear probe's features fit `budget` bytes on the device, and the chunk size if they do not.

    In memory, the train features are held once whole and once as the C-search's 90 % split (the subset is a
    copy), in the solver's dtype; L-BFGS keeps 2 x HISTORY_SIZE parameter vectors plus a few more either way.
    Streamed, one chunk of rows is on the device at a time: its float host copy, its device copy and the
    (rows x classes) logits and probabilities.
    """
    item = np.dtype(dtype).itemsize
    params = (d + 1) * k * item * (2 * HISTORY_SIZE + 8)
    in_memory = 2 * n * d * item + params
    per_row = d * (item + item) + 3 * k * item
    chunk = int(max(1, min(n, MAX_BLOCK_ELEMENTS // max(k, 1), (budget - params) // 2 // per_row)))
    return {"in_memory_bytes": int(in_memory), "streamed_bytes": int(params + chunk * per_row),
            "fits": in_memory <= budget, "chunk_rows": chunk, "parameter_bytes": int(params)}


class SoftmaxRegression:
    """Multinomial logistic regression on one set of rows: objective, gradient and an L-BFGS fit at a given C."""

    def __init__(self, features: "CentredFeatures | StreamedFeatures", labels: np.ndarray) -> None:
        import torch

        self.features = features
        self.classes, encoded = np.unique(labels, return_inverse=True)
        if len(self.classes) < 2:
            raise HarnessError(f"the linear probe needs at least two classes in train, got {self.classes.tolist()}")
        self.y = torch.as_tensor(encoded, dtype=torch.long, device=features.device)
        self.n, self.d = features.shape
        self.k = len(self.classes)
        self.block = max(1, MAX_BLOCK_ELEMENTS // self.k)
        if isinstance(features, StreamedFeatures):
            self.block = min(self.block, features.chunk_rows)

    @property
    def num_parameters(self) -> int:
        return (self.d + 1) * self.k

    def zeros(self) -> "torch.Tensor":
        import torch

        return torch.zeros(self.num_parameters, dtype=self.features.torch_dtype, device=self.features.device)

    def prior_start(self) -> "torch.Tensor":
        """W = 0 and b = log class frequencies: the minimiser in the limit C -> 0, so the path starts close to the
        smallest C's solution."""
        import torch

        theta = self.zeros()
        counts = torch.bincount(self.y, minlength=self.k).to(theta.dtype)
        theta[self.d * self.k:] = torch.log(counts / self.n)
        return theta

    def from_solution(self, solution: Solution | None) -> "torch.Tensor":
        """Initial parameters for this problem from a solution of another C or another row set (warm start)."""
        if solution is None:
            return self.prior_start()
        theta = self.zeros()
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

    def loss_and_grad(self, theta: "torch.Tensor", c: float, grad_out: "torch.Tensor | None" = None,
                      data_grad: "list[torch.Tensor] | None" = None) -> tuple[float, float, "torch.Tensor"]:
        """(scaled objective, sum of cross-entropies, gradient of the scaled objective).

        With `data_grad` (a list), a copy of the gradient of the mean cross-entropy alone is appended to it.
        """
        import torch

        y, n, d, k = self.y, self.n, self.d, self.k
        weights = theta[: d * k].view(d, k)
        bias = theta[d * k:]
        grad = torch.zeros_like(theta) if grad_out is None else grad_out.zero_()
        grad_w = grad[: d * k].view(d, k)
        grad_b = grad[d * k:]
        ce_sum = torch.zeros((), dtype=torch.float64, device=theta.device)
        for start, xb in zip(range(0, n, self.block), self.features.row_blocks(self.block)):
            yb = y[start:start + self.block]
            logits = torch.addmm(bias, xb, weights)
            lse = torch.logsumexp(logits, dim=1)
            ce_sum += lse.sum(dtype=torch.float64) - logits.gather(1, yb[:, None]).sum(dtype=torch.float64)
            # softmax - onehot, in place in the logits buffer
            probs = logits.sub_(lse[:, None]).exp_()
            probs[torch.arange(len(yb), device=probs.device), yb] -= 1.0
            grad_w.addmm_(xb.T, probs)
            grad_b += probs.sum(0)
        grad.div_(n)
        if data_grad is not None:
            data_grad.append(grad.clone())
        ce = float(ce_sum)
        return self._add_penalty(grad, weights, ce, c)

    def _add_penalty(self, grad: "torch.Tensor", weights: "torch.Tensor", ce: float, c: float
                     ) -> tuple[float, float, "torch.Tensor"]:
        import torch

        lam = 1.0 / (c * self.n)
        grad[: self.d * self.k].view(self.d, self.k).add_(weights, alpha=lam)
        sq_norm = float(torch.dot(weights.reshape(-1), weights.reshape(-1)).double())
        return ce / self.n + 0.5 * lam * sq_norm, ce, grad

    def objective(self, theta: "torch.Tensor", c: float) -> tuple[float, float, float]:
        """(scaled objective, written objective C*sum CE + ||W||^2/2, max |gradient of the scaled objective|)."""
        scaled, ce, grad = self.loss_and_grad(theta, c)
        return scaled, scaled * c * self.n, float(grad.abs().max())

    def fit(self, c: float, init: Solution | None, *, max_iter: int, tol: float) -> Solution:
        """Minimise the objective at C with L-BFGS, starting from `init` (a solution at another C) or the prior.

        When `init` was computed on this problem, L-BFGS's first step, the convergence test at the starting point,
        is done here from the data term kept with `init`: the same floating-point operations, without touching
        the data. If it passes, L-BFGS would return `init` unchanged, and so do we (the same tensor, so callers
        can reuse what they computed from it). Along a flat stretch of the C path this makes fits free.
        """
        import torch

        if init is not None and init.data_term is not None and init.data_term[0] is self:
            _, ce, data_grad = init.data_term
            weights = init.theta[: self.d * self.k].view(self.d, self.k)
            scaled, _, grad = self._add_penalty(data_grad.clone(), weights, ce, c)
            grad_max = float(grad.abs().max())
            if grad_max <= tol:
                return Solution(theta=init.theta, classes=self.classes, iterations=0, function_evaluations=0,
                                converged=True, grad_max=grad_max, objective_scaled=scaled,
                                objective=scaled * c * self.n, data_term=init.data_term)

        theta = self.from_solution(init).requires_grad_(False)
        param = torch.nn.Parameter(theta, requires_grad=True)
        grad_buffer = torch.zeros_like(theta)
        optimizer = torch.optim.LBFGS(
            [param], lr=1.0, max_iter=max_iter, max_eval=15 * max_iter, tolerance_grad=tol,
            # Stop early only when the loss or the step does not move at all (stagnation at the precision floor);
            # otherwise the gradient test or max_iter ends the fit, as in scikit-learn.
            tolerance_change=1e-300,
            history_size=HISTORY_SIZE, line_search_fn="strong_wolfe")

        last: dict[str, Any] = {}

        def closure() -> "torch.Tensor":
            data_grad: list[torch.Tensor] = []
            loss, ce, grad = self.loss_and_grad(param.detach(), c, grad_buffer, data_grad)
            param.grad = grad
            # Remember the last point evaluated: it is usually where L-BFGS stops, which saves an evaluation.
            last.update(theta=param.detach().clone(), loss=loss, grad_max=float(grad.abs().max()), ce=ce,
                        data_grad=data_grad[0])
            return torch.tensor(loss, dtype=torch.float64)

        with torch.no_grad():
            optimizer.step(closure)
        state = optimizer.state[param]
        solution_theta = param.detach().clone()
        if torch.equal(last["theta"], solution_theta):
            scaled, grad_max, ce, data_grad = last["loss"], last["grad_max"], last["ce"], last["data_grad"]
        else:
            kept: list[torch.Tensor] = []
            scaled, ce, grad = self.loss_and_grad(solution_theta, c, data_grad=kept)
            grad_max, data_grad = float(grad.abs().max()), kept[0]
        return Solution(theta=solution_theta, classes=self.classes, iterations=int(state.get("n_iter", 0)),
                        function_evaluations=int(state.get("func_evals", 0)), converged=grad_max <= tol,
                        grad_max=grad_max, objective_scaled=scaled, objective=scaled * c * self.n,
                        data_term=(self, ce, data_grad))

    def raw_coefficients(self, solution: Solution) -> tuple[np.ndarray, np.ndarray]:
        """(coef (K, D), intercept (K,)) in raw-feature coordinates, laid out as scikit-learn's."""
        d, k = self.d, len(solution.classes)
        weights = solution.theta[: d * k].view(d, k).double()
        bias = solution.theta[d * k:].double() - self.features.shift.double() @ weights
        return weights.T.cpu().numpy(), bias.cpu().numpy()


def scores(features: "CentredFeatures | StreamedFeatures", solution: Solution) -> "torch.Tensor":
    """Logits of every row for the solution's classes (columns in `solution.classes` order)."""
    return features.logits(solution.theta, len(solution.classes))


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, c: float, *, device: str = "cpu",
                            dtype: str = "float64", max_iter: int = 1000, tol: float = 1e-4,
                            chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, Solution]:
    """One fit at one C, as scikit-learn's ``LogisticRegression(C=c).fit`` would do it; for tests and benchmarks.

    With `chunk_rows`, the features are streamed from `features` (a memory map, say) that many rows at a time
    instead of being copied to the device whole (`StreamedFeatures`). Returns (coef (K, D), intercept (K,),
    solution), coefficients in raw-feature coordinates.
    """
    x = (CentredFeatures.from_array(features, device=device, dtype=dtype) if chunk_rows is None else
         StreamedFeatures.from_array(features, device=device, dtype=dtype, chunk_rows=chunk_rows))
    problem = SoftmaxRegression(x, np.asarray(labels))
    solution = problem.fit(c, None, max_iter=max_iter, tol=tol)
    coef, intercept = problem.raw_coefficients(solution)
    return coef, intercept, solution


# -- the C search -------------------------------------------------------------------------------------------------


def coarse_indices(num_c: int, stride: int) -> list[int]:
    """The coarse grid indices: every `stride`-th point, always including both ends."""
    stride = max(1, int(stride))
    coarse = list(range(0, num_c, stride))
    if coarse[-1] != num_c - 1:
        coarse.append(num_c - 1)
    return coarse


def warm_start_index(i: int, coarse: Sequence[int]) -> int | None:
    """The grid point whose solution starts the fit at point i: the coarse point just below it.

    Coarse points chain from one to the next, and every other point starts from the coarse point below it, in both
    the full sweep and the coarse-to-fine search. So the two searches compute bit-identical solutions (and
    validation scores) at every point they share, and can only differ in which points they look at.
    """
    below = [j for j in coarse if j < i]
    return below[-1] if below else None


def select_c_index(evaluate: Callable[[int], int], num_c: int, *, strategy: str, stride: int,
                   refine_margin: int) -> tuple[int, dict[int, int]]:
    """Pick the grid index with the most correct validation predictions, ties towards the smaller C.

    `evaluate(i)` fits grid point i (starting from the solution at `warm_start_index(i)`, which has been fitted
    before) and returns its number of correct validation predictions. `refine_margin` is in correct predictions:
    coarse points within it of the best coarse point get their neighbours (up to stride - 1 steps either side)
    fitted too. Returns (chosen index, {index: correct} for every index fitted).
    """
    if strategy not in SEARCH_STRATEGIES:
        raise HarnessError(f"unknown C search {strategy!r}; use one of {SEARCH_STRATEGIES}")
    coarse = coarse_indices(num_c, stride)
    correct: dict[int, int] = {}
    if strategy == "full":
        for i in range(num_c):
            correct[i] = evaluate(i)
    else:
        for i in coarse:
            correct[i] = evaluate(i)
        best = max(correct.values())
        centres = [i for i in coarse if correct[i] >= best - refine_margin]
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

    def __init__(self, *, memory_budget_mb: float | None = None, streaming: bool | None = None,
                 **options: Any) -> None:
        """`memory_budget_mb` (default: the device's) decides whether the features are held on the device or
        streamed from the cache in chunks; `streaming=True/False` forces either. Execution settings, like the
        device: the objective and the solver are the same, so they are not options (not part of the cell key)."""
        super().__init__(**options)
        if streaming not in (None, True, False):
            raise HarnessError(f"linear probe streaming={streaming!r}: True, False or None (automatic)")
        self.memory_budget_mb = memory_budget_mb
        self.streaming = streaming

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
            "refine_margin": 0.01,  # fraction of the validation set (at least two items)
            "dtype": "float32",
        }

    def evaluate(self, train: Embeddings | None, test: Embeddings, *, seed: int, device: str) -> EvaluationResult:
        import torch

        o = self.options
        if train is None:
            raise HarnessError("the linear probe needs the train split")
        if o["dtype"] not in DTYPES:
            raise HarnessError(f"linear probe dtype must be one of {DTYPES}, not {o['dtype']!r}")
        if o["search"] not in SEARCH_STRATEGIES:
            raise HarnessError(f"linear probe search must be one of {SEARCH_STRATEGIES}, not {o['search']!r}")
        train_labels = np.asarray(train.labels).astype(np.int64)
        labelled = np.flatnonzero(train_labels >= 0)
        if len(labelled) < len(train_labels):
            train_labels = train_labels[labelled]
        else:
            labelled = None
        test_labels = np.asarray(test.labels).astype(np.int64)
        if not (test_labels >= 0).any():
            raise HarnessError("the test split has no labels; the linear probe needs them")

        # Full-precision float32 matrix products: TF32 or bf16 (which an extractor may have switched on for the
        # whole process with `set_float32_matmul_precision`) cannot reach the gradient tolerance. Restored after.
        matmul_precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            with torch.no_grad():
                return self._evaluate(train, test, train_labels, labelled, test_labels, seed, device)
        finally:
            torch.set_float32_matmul_precision(matmul_precision)

    def _evaluate(self, train: Embeddings, test: Embeddings, train_labels: np.ndarray, labelled: np.ndarray | None,
                  test_labels: np.ndarray, seed: int, device: str) -> EvaluationResult:
        import torch

        o = self.options
        grid = c_grid(o["log10_c_min"], o["log10_c_max"], o["num_c"])
        budget = budget_bytes(self.memory_budget_mb, device)
        plan = streaming_plan(len(train_labels), train.features.shape[1], len(np.unique(train_labels)), o["dtype"],
                              budget)
        streamed = (not plan["fits"]) if self.streaming is None else self.streaming
        if streamed:
            x_train = StreamedFeatures.from_array(train.features, device=device, dtype=o["dtype"], rows=labelled,
                                                  chunk_rows=plan["chunk_rows"])
        else:
            x_train = CentredFeatures.from_array(train.features, device=device, dtype=o["dtype"], rows=labelled)
        fit_rows, val_rows, split_how = validation_split(train_labels, o["val_fraction"], seed)
        fit_problem = SoftmaxRegression(x_train.subset(fit_rows), train_labels[fit_rows])
        x_val = x_train.subset(val_rows)
        y_val = torch.as_tensor(train_labels[val_rows], device=x_train.device)

        solutions: dict[int, Solution] = {}
        counts: dict[int, int] = {}

        coarse = coarse_indices(len(grid), int(o["coarse_stride"]))

        def evaluate_c(i: int) -> int:
            start = warm_start_index(i, coarse)
            init = None if start is None else solutions[start]
            solution = fit_problem.fit(float(grid[i]), init, max_iter=o["max_iter"], tol=o["tolerance"])
            solutions[i] = solution
            if init is not None and solution.theta is init.theta:  # unchanged: same predictions
                counts[i] = counts[start]
            else:
                classes = torch.as_tensor(solution.classes, device=x_train.device)
                counts[i] = int((classes[scores(x_val, solution).argmax(1)] == y_val).sum())
            return counts[i]

        margin = max(2, int(math.floor(o["refine_margin"] * len(val_rows))))
        chosen, correct = select_c_index(evaluate_c, len(grid), strategy=o["search"],
                                         stride=int(o["coarse_stride"]), refine_margin=margin)
        curve = [{"C": float(grid[i]), "val_top1": correct[i] / len(val_rows),
                  "iterations": solutions[i].iterations, "converged": solutions[i].converged}
                 for i in sorted(correct)]
        start_refit = solutions[chosen]
        start_refit.data_term = None  # it holds the split's problem (its rows on the device)
        del fit_problem, x_val, solutions

        refit_problem = SoftmaxRegression(x_train, train_labels)
        final = refit_problem.fit(float(grid[chosen]), start_refit, max_iter=o["max_iter"], tol=o["tolerance"])
        final.data_term = None
        if streamed:
            x_test = StreamedFeatures.from_array(test.features, device=device, dtype=o["dtype"],
                                                 shift=x_train.shift, chunk_rows=plan["chunk_rows"])
        else:
            x_test = CentredFeatures.from_array(test.features, device=device, dtype=o["dtype"], shift=x_train.shift)
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
            "val_top1": correct[chosen] / len(val_rows),
            "val_accuracy_per_C": curve,
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
            "tolerance_definition": "max |gradient| of mean cross-entropy + ||W||^2/(2 C n) w.r.t. (W, b), features "
                                    "centred by the train mean",
            "search": o["search"],
            "dtype": o["dtype"],
            "classes_in_model": int(len(final.classes)),
            # How it was computed (differs between machines, not the objective or the solver).
            "runtime": {"streamed": bool(streamed), "chunk_rows": plan["chunk_rows"] if streamed else None,
                        "memory_budget_bytes": budget, "in_memory_bytes": plan["in_memory_bytes"],
                        "streamed_bytes": plan["streamed_bytes"]},
        })
        return EvaluationResult(
            metrics=metrics, main_score=metrics["top1"], main_metric="top1",
            predictions={"ids": np.asarray(test.ids), "label": test_labels, "prediction": prediction, "top5": top5,
                         "score": (prediction == test_labels).astype(np.float64)})  # mean = main score (top1)

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
