"""The linear probe's solver: multinomial logistic regression at one C, by full-batch L-BFGS in torch.

It minimises scikit-learn's `LogisticRegression(C=C)` objective, scaled as scikit-learn's L-BFGS does
(mean cross-entropy + ||W||^2 / (2 C n)), on train-mean-centred features; a fit may start from the solution at
another C (warm start), and returns it unchanged, without reading the data, when it already meets the tolerance.
The stopping rule and why it is part of the protocol: docs/protocols.md#linearlogreg-v1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import HarnessError

from .features import MAX_BLOCK_ELEMENTS, CentredFeatures, StreamedFeatures

if TYPE_CHECKING:  # torch is imported where it is used, so `import harness.plugins.linear_probe` stays cheap
    import torch

#: L-BFGS memory (scikit-learn's L-BFGS-B uses 10); a solver setting, not part of the protocol's definition.
HISTORY_SIZE = 20


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
