"""The summary of one classifier at one shot count: mean over draws and its 95 % Student-t interval."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

CONFIDENCE = 0.95
DESCRIPTION = ("mean over draws ± t(0.975, draws − 1) · sd / √draws: Student-t 95 % interval of the mean, "
               "sd the sample standard deviation over draws (ddof = 1)")


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """{mean, sd, ci95_low, ci95_high}; sd and the interval are None below two draws."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "sd": None, "ci95_low": None, "ci95_high": None}
    from scipy.stats import t

    sd = statistics.stdev(values)
    half = float(t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci95_low": mean - half, "ci95_high": mean + half}
