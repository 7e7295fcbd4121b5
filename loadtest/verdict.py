"""Did the split hold? The verdict of a run, and the exit status that gates a pipeline.

- The split: a chi-square goodness-of-fit test of the observed counts per group against the expected shares
  (`--expect` or `--from-gateway`), at significance `--alpha`. Responses without a group label and requests
  without a response do not take part (they are judged as errors). A labelled group that was not expected
  fails the split whatever the statistics. With `--sticky` the unit is the virtual user (each counted once,
  in the group it saw first): a user's requests all go one way, so counting them as independent requests
  would overstate the evidence.
- The errors: the error rate must not exceed `--max-errors`.
- Stickiness: with `--sticky`, no virtual user may have seen more than one group.

Exit status 0 when everything holds, 3 when anything does not. A run that cannot be judged after all (the
responses' groups match no route of `--from-gateway`: 2) or whose results cannot be written (1) fails too,
with its reason (`failed`), so that the verdict shown and the exit status always agree.
"""
from __future__ import annotations

from typing import Any

from scipy.stats import chi2

PASSED, FAILURE, BAD_INPUT, FAILED = 0, 1, 2, 3


def normalised(expected: dict[str, float]) -> dict[str, float]:
    """Shares scaled to add up to 1 (a gateway may be expected to serve some requests with no route at all:
    those answers carry no group label and are judged as errors, not as part of the split)."""
    total = sum(expected.values())
    return {label: share / total for label, share in expected.items()} if total > 0 else dict(expected)


def chi_square(observed: dict[str, int], expected: dict[str, float]) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) for counts against expected shares (adding up to 1); groups
    with an expected share of 0 must have been checked for being empty before."""
    total = sum(observed.get(label, 0) for label in expected)
    cells = [(observed.get(label, 0), share * total) for label, share in expected.items() if share > 0]
    statistic = sum((seen - wanted) ** 2 / wanted for seen, wanted in cells) if total else 0.0
    freedom = len(cells) - 1
    p_value = float(chi2.sf(statistic, freedom)) if freedom > 0 else 1.0
    return float(statistic), freedom, p_value


def judge(*, observed: dict[str, int], expected: dict[str, float] | None, expected_from: str | None,
          unit: str, requests: int, errors: int, alpha: float, max_errors: float,
          users_with_several_groups: int | None) -> dict[str, Any]:
    """The `verdict` object of the result (see result.schema.json)."""
    reasons: list[str] = []
    statistic = freedom = p_value = None
    split_holds = None
    if expected is not None:
        total = sum(observed.values())
        unexpected = sorted(label for label, count in observed.items() if count and expected.get(label, 0) == 0)
        statistic, freedom, p_value = chi_square(observed, expected)
        split_holds = total > 0 and not unexpected and p_value >= alpha
        if total == 0:
            reasons.append(f"no {unit} had a group label, so the split could not be checked")
        if unexpected:
            reasons.append("not expected: " + ", ".join(
                f"{label} got {observed[label]:,} {unit}" for label in unexpected))
        if total and not unexpected and p_value < alpha:
            shares = ", ".join(f"{label} {observed.get(label, 0) / total:.2%} (expected {share:.2%})"
                               for label, share in expected.items())
            reasons.append(
                f"the split differs from the expected one: {shares} over {total:,} {unit} "
                f"(chi-square {statistic:.4g}, {freedom} degree{'s' if freedom != 1 else ''} of freedom, "
                f"p = {p_value:.3g} < alpha {alpha:g})")
    error_rate = errors / requests if requests else 0.0
    errors_ok = error_rate <= max_errors
    if not errors_ok:
        reasons.append(f"error rate {error_rate:.3%} ({errors:,} of {requests:,} requests) is above "
                       f"--max-errors {max_errors:.3%}")
    if requests == 0:
        errors_ok = False
        reasons.append("no request finished")
    sticky_ok = None
    if users_with_several_groups is not None:
        sticky_ok = users_with_several_groups == 0
        if not sticky_ok:
            reasons.append(f"{users_with_several_groups:,} sticky virtual users saw more than one group")
    passed = split_holds is not False and errors_ok and sticky_ok is not False
    return {
        "expected_from": expected_from,
        "unit": unit,
        "chi_square": statistic,
        "degrees_of_freedom": freedom,
        "p_value": p_value,
        "alpha": alpha,
        "split_holds": split_holds,
        "max_errors": max_errors,
        "errors_ok": errors_ok,
        "sticky_ok": sticky_ok,
        "passed": passed,
        "exit_status": PASSED if passed else FAILED,
        "reasons": reasons,
    }


def failed(verdict: dict[str, Any], reason: str, exit_status: int) -> dict[str, Any]:
    """The verdict of a run that cannot pass whatever it measured: not passed, with `reason` and the command's
    `exit_status` (BAD_INPUT or FAILURE)."""
    return {**verdict, "passed": False, "exit_status": exit_status, "reasons": [*verdict["reasons"], reason]}
