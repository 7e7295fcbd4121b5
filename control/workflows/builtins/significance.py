"""Is the canary's error rate significantly higher than the baseline's? Fisher's exact test, one-sided, on the 2×2
table of errors and other responses of the two routes (docs/canary.md, "Comparing with the baseline").

Given the totals, the canary's error count follows a hypergeometric distribution if both routes fail alike; the
p-value is the chance of seeing at least as many canary errors as were seen. It is exact at any count (no normal
approximation, so it holds for a handful of errors as well as for thousands) and needs only `math`.
"""
from __future__ import annotations

import math

NEGLIGIBLE = 50.0     # a term this many e-folds below the largest adds nothing a float can hold


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def higher_error_rate_p_value(canary_errors: int, canary_requests: int,
                              baseline_errors: int, baseline_requests: int) -> float:
    """P(X >= canary_errors) for X ~ Hypergeometric(population = all requests, successes = all errors,
    draws = canary_requests): small when the canary fails more often than chance allows, 1 when nothing failed."""
    for count in (canary_errors, canary_requests, baseline_errors, baseline_requests):
        if count < 0:
            raise ValueError("counts are never negative")
    if canary_errors > canary_requests or baseline_errors > baseline_requests:
        raise ValueError("errors are part of the requests")
    population = canary_requests + baseline_requests
    failures = canary_errors + baseline_errors
    draws = canary_requests
    if canary_errors == 0 or draws == 0 or baseline_requests == 0:
        return 1.0
    highest = min(failures, draws)
    log_total = _log_choose(population, draws)
    mode = (draws + 1) * (failures + 1) // (population + 2)
    terms: list[float] = []
    top = -math.inf
    for k in range(canary_errors, highest + 1):
        term = _log_choose(failures, k) + _log_choose(population - failures, draws - k) - log_total
        terms.append(term)
        top = max(top, term)
        if k > mode and term < top - NEGLIGIBLE:
            break                                   # past the mode the terms only shrink
    p_value = math.exp(top) * math.fsum(math.exp(term - top) for term in terms)
    return min(1.0, p_value)
