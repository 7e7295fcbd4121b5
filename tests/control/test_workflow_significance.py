"""The canary's comparison with its baseline (docs/canary.md, "Comparing with the baseline"): the one-sided Fisher
exact test computed with `math` alone agrees with SciPy's on small and large tables."""
from __future__ import annotations

import pytest
from scipy.stats import fisher_exact

from control.workflows.builtins.significance import higher_error_rate_p_value

TABLES = [
    (3, 20, 1, 20),              # a handful of requests
    (0, 50, 5, 50),              # the canary failed less
    (18, 1500, 285, 28500),      # 1.2% against 1%
    (45, 1500, 285, 28500),      # 3% against 1%
    (30, 150, 0, 2850),          # 20% against nothing
    (500, 10000, 400, 10000),
    (2, 100000, 1, 100000),
    (20000, 100000, 19500, 100000),
]


@pytest.mark.parametrize("canary_errors, canary_requests, baseline_errors, baseline_requests", TABLES)
def test_the_p_value_is_fishers_one_sided(canary_errors, canary_requests, baseline_errors, baseline_requests):
    table = [[canary_errors, canary_requests - canary_errors], [baseline_errors, baseline_requests - baseline_errors]]
    _, expected = fisher_exact(table, alternative="greater")
    ours = higher_error_rate_p_value(canary_errors, canary_requests, baseline_errors, baseline_requests)
    assert ours == pytest.approx(expected, rel=1e-6, abs=1e-300)


def test_without_errors_or_without_a_baseline_nothing_is_significant():
    assert higher_error_rate_p_value(0, 1000, 0, 1000) == 1.0
    assert higher_error_rate_p_value(10, 1000, 0, 0) == 1.0
    assert higher_error_rate_p_value(0, 0, 10, 1000) == 1.0


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError):
        higher_error_rate_p_value(5, 4, 0, 10)
    with pytest.raises(ValueError):
        higher_error_rate_p_value(-1, 4, 0, 10)
