"""The smooth weighted round-robin balancer on its own (gateway/routing/balancer.py): exact shares over every
window, fenced (draining) children, children going down and coming back, exclusion."""
from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing.balancer import SmoothWeighted

NOW = 1000.0


class Child:
    def __init__(self, name: str) -> None:
        self.name = name
        self.down_until = 0.0

    def __repr__(self) -> str:
        return self.name


def balancer(*weights: int, fenced: tuple[int, ...] = ()) -> tuple[SmoothWeighted[Child], list[Child]]:
    children = [Child(f"c{i}") for i in range(len(weights))]
    return SmoothWeighted((c, w, i in fenced) for i, (c, w) in enumerate(zip(children, weights))), children


def picks(pick, n: int, now: float = NOW) -> list[str | None]:
    names = []
    for _ in range(n):
        chosen = pick(now)
        names.append(chosen.name if chosen is not None else None)
    return names


def worst_window_deviation(weights: tuple[int, ...], names: list[str | None]) -> Fraction:
    total = sum(weights)
    worst = Fraction(0)
    for i, weight in enumerate(weights):
        prefix = [0]
        for name in names:
            prefix.append(prefix[-1] + (name == f"c{i}"))
        for window in range(1, len(names) + 1):
            exact = Fraction(window * weight, total)
            for start in range(len(names) - window + 1):
                worst = max(worst, abs(prefix[start + window] - prefix[start] - exact))
    return worst


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=60), st.integers(min_value=1, max_value=60))
def test_two_children_every_window_within_one_pick_and_each_period_exact(weight_a, weight_b):
    pool, _ = balancer(weight_a, weight_b)
    period = weight_a + weight_b
    names = picks(pool.pick, 2 * period)
    assert worst_window_deviation((weight_a, weight_b), names) <= 1
    assert Counter(names[:period]) == {"c0": weight_a, "c1": weight_b}
    assert names[:period] == names[period:]                  # the running values are back at zero


@pytest.mark.parametrize("weights", [(5, 3, 2), (1, 1, 1, 1), (97, 1, 1, 1), (50, 0, 50)])
def test_more_children_each_period_is_exact(weights):
    pool, _ = balancer(*weights)
    period = sum(weights)
    names = picks(pool.pick, 3 * period)
    assert Counter(names[:period]) == {f"c{i}": w for i, w in enumerate(weights) if w}
    assert names[:period] == names[period:2 * period] == names[2 * period:]


def test_smooth_order_and_ties_go_to_the_first_written():
    pool, _ = balancer(5, 1, 1)
    assert picks(pool.pick, 7) == ["c0", "c0", "c1", "c0", "c2", "c0", "c0"]      # nginx's example
    even, _ = balancer(1, 1)
    assert picks(even.pick, 4) == ["c0", "c1", "c0", "c1"]


def test_children_of_weight_zero_and_empty_balancers_give_nothing():
    pool, _ = balancer(0, 3)
    assert set(picks(pool.pick, 10)) == {"c1"}
    assert SmoothWeighted([]).pick(NOW) is None
    assert SmoothWeighted([(Child("x"), 0, False)]).pick_for_sticky_client(NOW) is None


def test_a_child_that_is_down_gets_nothing_and_the_others_share_exactly_until_it_is_back():
    pool, children = balancer(5, 3, 2)
    children[2].down_until = NOW + 1
    assert Counter(picks(pool.pick, 800)) == {"c0": 500, "c1": 300}
    assert children[2].name in picks(pool.pick, 10, now=NOW + 1)   # its down time is over: it is picked again
    got = Counter(picks(pool.pick, 1000, now=NOW + 1))
    assert all(abs(got[f"c{i}"] - share) <= 2 for i, share in enumerate((500, 300, 200))), got


def test_nothing_available_gives_none_and_changes_nothing():
    pool, children = balancer(2, 1)
    before = picks(pool.pick, 3)
    for child in children:
        child.down_until = NOW + 5
    assert picks(pool.pick, 5) == [None] * 5
    for child in children:
        child.down_until = 0.0
    assert picks(pool.pick, 3) == before


@pytest.mark.parametrize("weights", [(1,), (3, 1)])
def test_exclude_skips_one_child_for_one_pick(weights):
    pool, children = balancer(*weights)
    assert pool.pick(NOW, exclude=children[0]) is (children[1] if len(children) > 1 else None)
    assert pool.pick(NOW) is not None


def test_fenced_children_get_no_new_picks_but_sticky_clients_still_reach_them():
    pool, children = balancer(1, 1, 1, fenced=(0, 2))
    assert set(picks(pool.pick, 10)) == {"c1"}
    assert set(picks(pool.pick_for_sticky_client, 10)) == {"c1"}       # an unfenced child first
    children[1].down_until = NOW + 1
    assert picks(pool.pick, 3) == [None] * 3
    assert Counter(picks(pool.pick_for_sticky_client, 10)) == {"c0": 5, "c2": 5}   # else the fenced ones
    children[0].down_until = children[2].down_until = NOW + 1
    assert pool.pick_for_sticky_client(NOW) is None


def test_fenced_children_share_by_weight_and_all_fenced_means_no_new_picks():
    pool, _ = balancer(3, 1, fenced=(0, 1))
    assert pool.pick(NOW) is None
    assert Counter(picks(pool.pick_for_sticky_client, 400)) == {"c0": 300, "c1": 100}
    assert [c.name for c in pool.children] == ["c0", "c1"]


def test_a_single_child_is_picked_whenever_it_is_available():
    pool, children = balancer(7, fenced=())
    assert picks(pool.pick, 3) == ["c0"] * 3
    children[0].down_until = NOW + 1
    assert pool.pick(NOW) is None and pool.pick(NOW + 1) is children[0]
