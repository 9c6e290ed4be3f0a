"""Reference intervals for the stopping rule of `repetitions: auto`, computed with SciPy.

The rule (results/src/sequential.rs) judges the per-round log-ratios of a cohort over its
baseline with a t interval at level 1 - alpha/L, L being the looks the budget allows (rounds 3
to the budget), and reports it as a change: exp(bound) - 1. This script computes the same
intervals independently (scipy.stats.t) for fixed samples and writes sequential.json, which
the Rust tests compare against. Regenerate with:

    python3 -m venv /tmp/v && /tmp/v/bin/pip install scipy
    /tmp/v/bin/python results/tests/reference/sequential.py > results/tests/reference/sequential.json
"""

import json
import math
import random

import scipy
from scipy import stats

ALPHA = 0.05
FIRST_LOOK = 3


def case(log_ratios, budget):
    n = len(log_ratios)
    looks = max(budget - FIRST_LOOK + 1, 1)
    level = 1 - ALPHA / looks
    mean = sum(log_ratios) / n
    sem = stats.sem(log_ratios)
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=sem)
    return {
        "log_ratios": log_ratios,
        "budget": budget,
        "t": float(stats.t.ppf(1 - (1 - level) / 2, n - 1)),
        "change": math.exp(mean) - 1,
        "low": math.exp(low) - 1,
        "high": math.exp(high) - 1,
    }


def main():
    rng = random.Random(20261205)
    cases = []
    for n, budget, shift, noise in [
        (3, 20, 0.0, 0.05),
        (3, 3, -0.12, 0.02),
        (4, 10, 0.03, 0.01),
        (6, 20, -0.05, 0.03),
        (9, 12, 0.10, 0.08),
        (12, 30, 0.0, 0.004),
        (20, 20, -0.02, 0.05),
        (40, 100, 0.01, 0.2),
    ]:
        log_ratios = [round(rng.gauss(shift, noise), 6) for _ in range(n)]
        cases.append(case(log_ratios, budget))
    print(json.dumps({"scipy": scipy.__version__, "alpha": ALPHA, "cases": cases}, indent=1))


main()
