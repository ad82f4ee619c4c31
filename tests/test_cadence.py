"""The checkpoint cadence: at most every `every_s` seconds, and never more than 5% of the time
spent saving."""

import pytest

from vdjax import protocol


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(protocol.time, "monotonic", lambda: now[0])
    return now


def test_saves_at_most_every_interval(clock):
    cadence = protocol.SaveCadence(60.0)
    clock[0] += 59.0
    assert not cadence.due()
    clock[0] += 1.0
    assert cadence.due()
    started = clock[0]
    clock[0] += 0.5  # a save of half a second
    cadence.saved(started)
    clock[0] += 59.9
    assert not cadence.due()
    clock[0] += 0.1
    assert cadence.due()


def test_a_slow_save_spaces_the_next_one_to_twenty_times_its_cost(clock):
    cadence = protocol.SaveCadence(60.0)
    started = clock[0]
    clock[0] += 10.0  # a 10 s save: the next may come only after 200 s
    cadence.saved(started)
    clock[0] += 199.0
    assert not cadence.due()
    clock[0] += 1.0
    assert cadence.due()


def test_zero_saves_whenever_asked(clock):
    cadence = protocol.SaveCadence(0.0)
    assert cadence.due()
    cadence.saved(clock[0])
    assert cadence.due()
