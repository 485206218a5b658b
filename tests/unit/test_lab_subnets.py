"""Which /24 a new lab takes: its name's own, or the next free one when two names hash alike
(the test suite brings labs up side by side, one set per pytest-xdist worker)."""

from __future__ import annotations

import ipaddress

import pytest

from opsctl.errors import OpsctlError
from opsctl.lab import fleet, spec


def test_each_name_has_a_stable_subnet_and_lab_keeps_the_first():
    assert next(spec.default_subnets("lab")) == "10.213.0.0/24"
    assert next(spec.default_subnets("t0rh")) == next(spec.default_subnets("t0rh"))
    # Two of the suite's names hash alike: the reason for the fallback.
    assert next(spec.default_subnets("t0rh")) == next(spec.default_subnets("t1bj"))


def test_the_fallbacks_cover_every_subnet_once():
    subnets = list(spec.default_subnets("t1bj"))
    assert len(subnets) == len(set(subnets)) == 251
    assert {ipaddress.ip_network(s).network_address.packed[2] for s in subnets} == set(range(251))


def test_a_taken_subnet_moves_the_new_lab_to_the_next_free_one(monkeypatch):
    own, second = [s for s, _ in zip(spec.default_subnets("t1bj"), range(2))]
    taken = [("olb-t0rh", own.replace(".0/24", ".1/24")), ("eth0", "10.213.77.9/16")]
    monkeypatch.setattr(fleet.system, "addresses_in_use", lambda: taken)
    # The /16 on eth0 covers every 10.213.x: nothing is free.
    with pytest.raises(OpsctlError, match="every 10.213.x.0/24 is in use"):
        fleet._free_subnet("t1bj")
    monkeypatch.setattr(fleet.system, "addresses_in_use", lambda: taken[:1])
    assert fleet._free_subnet("t1bj") == second
    monkeypatch.setattr(fleet.system, "addresses_in_use", lambda: [])
    assert fleet._free_subnet("t1bj") == own
