"""The few-shot protocol's options, checked once: by `check_dataset` before any work, and again by `evaluate`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from harness.errors import HarnessError

CLASSIFIERS = ("centroid", "logistic")

DEFAULTS: dict[str, Any] = {
    "shots": [1, 2, 5, 10],
    "draws": 5,
    "main_classifier": "logistic",
    "main_shots": 5,
    "allow_smaller_classes": False,
    "one_shot_C": 1.0,  # scikit-learn's default C; CL2N rows have norm 1, so it means the same for every encoder
    "log10_c_min": -2.0,
    "log10_c_max": 4.0,
    "num_c": 13,  # half-decade steps
    "max_iter": 1000,
    "tolerance": 1e-4,
}


@dataclass(frozen=True)
class FewShotOptions:
    shots: tuple[int, ...]  # ascending, distinct
    draws: int
    main_classifier: str
    main_shots: int
    allow_smaller_classes: bool
    one_shot_c: float
    log10_c_min: float
    log10_c_max: float
    num_c: int
    max_iter: int
    tolerance: float

    @property
    def main_metric(self) -> str:
        return metric_name(self.main_classifier, self.main_shots)


def metric_name(classifier: str, shots: int) -> str:
    """The record's metric for the mean accuracy of a classifier at a shot count: `logistic_5shot`."""
    return f"{classifier}_{shots}shot"


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HarnessError(f"fewshot option {name}={value!r}: a positive whole number")
    return value


def _number(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        raise HarnessError(f"fewshot option {name}={value!r}: a{' positive' if positive else ''} number")
    return float(value)


def parse_options(options: Mapping[str, Any]) -> FewShotOptions:
    """The options as the protocol uses them; an impossible one is a HarnessError naming it."""
    shots_value = options["shots"]
    if isinstance(shots_value, int) and not isinstance(shots_value, bool):
        shots_value = [shots_value]
    if isinstance(shots_value, str):  # `--eval-option fewshot.shots=[1,5]` (or 1,5) arrives as text
        try:
            shots_value = [int(part) for part in shots_value.strip().strip("[]").split(",")]
        except ValueError:
            raise HarnessError(f"fewshot option shots={shots_value!r}: whole numbers separated by commas, e.g. "
                               f"[1,2,5,10]") from None
    if not isinstance(shots_value, (list, tuple)) or not shots_value:
        raise HarnessError(f"fewshot option shots={shots_value!r}: a list of shot counts per class, e.g. [1, 2, 5, 10]")
    shots = tuple(sorted({_positive_int("shots", s) for s in shots_value}))
    main_shots = _positive_int("main_shots", options["main_shots"])
    if main_shots not in shots:
        raise HarnessError(f"fewshot option main_shots={main_shots} must be one of shots={list(shots)}")
    if options["main_classifier"] not in CLASSIFIERS:
        raise HarnessError(f"fewshot option main_classifier={options['main_classifier']!r}: one of {CLASSIFIERS}")
    if not isinstance(options["allow_smaller_classes"], bool):
        raise HarnessError(f"fewshot option allow_smaller_classes={options['allow_smaller_classes']!r}: true or false")
    low, high = _number("log10_c_min", options["log10_c_min"]), _number("log10_c_max", options["log10_c_max"])
    if low > high:
        raise HarnessError(f"fewshot options log10_c_min={low} > log10_c_max={high}")
    return FewShotOptions(shots=shots, draws=_positive_int("draws", options["draws"]),
                          main_classifier=options["main_classifier"], main_shots=main_shots,
                          allow_smaller_classes=options["allow_smaller_classes"],
                          one_shot_c=_number("one_shot_C", options["one_shot_C"], positive=True),
                          log10_c_min=low, log10_c_max=high, num_c=_positive_int("num_c", options["num_c"]),
                          max_iter=_positive_int("max_iter", options["max_iter"]),
                          tolerance=_number("tolerance", options["tolerance"], positive=True))
