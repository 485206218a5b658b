"""The lab load's burst schedule (opsctl/lab/load.py): how many clients a burst in phases has
brought at a given moment, which is what keeps each phase's arrival rate whatever the server does."""

from __future__ import annotations

import pytest

from opsctl.lab.load import Phase, due

SALE = [Phase(30, 25), Phase(120, 200), Phase(30, 25)]


@pytest.mark.parametrize(("elapsed", "expected"), [
    (0, 0), (10, 250), (30, 750), (31, 950), (150, 24_750), (160, 25_000), (180, 25_500), (999, 25_500),
])
def test_due_sums_each_phase_rate_times_its_elapsed_part(elapsed: float, expected: float) -> None:
    assert due(SALE, elapsed) == pytest.approx(expected)


def test_one_phase_is_a_constant_rate() -> None:
    assert [due([Phase(10, 40)], t) for t in (0.5, 5, 10, 11)] == [20, 200, 400, 400]
