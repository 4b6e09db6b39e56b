"""Relay policy table and latching driver (both runtimes)."""

from agent.config import validate
from agent.relay import driver as driver_mod
from agent.relay import policy
from agent.relay.driver import RelayDriver


def test_every_state_has_a_row_and_targets_are_states():
    for state in policy.STATES:
        row = policy.TABLE[state]
        for trigger in row:
            assert row[trigger] in policy.STATES or row[trigger] == policy.REFUSE


def test_guarantee_power_blocks_every_trip():
    s = policy.GUARANTEE
    assert policy.next_state(s, policy.TRIP) == policy.REFUSE
    assert policy.next_state(s, policy.ARREARS) is None
    assert policy.closed_in(s)
    assert policy.next_state(s, policy.GUARANTEE_OFF) == policy.CONNECTED


def test_reconnection_after_topup_is_automatic_or_by_button():
    s = policy.TRIPPED_ARREARS
    assert policy.next_state(s, policy.CREDIT_OK) == policy.CONNECTED
    assert policy.next_state(s, policy.CREDIT_OK, policy.BY_BUTTON) == policy.CLOSE_ALLOWED
    assert policy.next_state(policy.CLOSE_ALLOWED, policy.BUTTON) == policy.CONNECTED
    assert policy.next_state(s, policy.CLOSE_DIRECT) == policy.REFUSE
    assert policy.next_state(s, policy.FORCE_ON) == policy.FORCED
    assert policy.next_state(policy.FORCED, policy.ARREARS) is None


def _driver(**kw):
    return RelayDriver(validate(kw, driver_mod.SCHEMA))


def _coils(actions):
    return [(a.coil, a.width_ms) for a in actions]


def test_driver_spaces_operations_so_coils_never_overlap():
    d = _driver(pulse_ms=60, min_interval_ms=1000)
    d.boot()
    assert _coils(d.request(False, 0)) == [("reset", 60)]
    assert d.request(True, 10) == []  # first pulse still running
    assert d.poll(50) == ([], None)
    acts, finding = d.poll(110)  # first pulse settled; next one must wait for spacing
    assert acts == [] and finding == ("done", False, False)
    assert d.deadline() == 1060
    acts, finding = d.poll(1060)
    assert _coils(acts) == [("set", 60)]
    d.poll(1200)
    assert d.position is True


def test_driver_without_feedback_assumes_and_at_boot_position_is_unknown():
    d = _driver()
    d.boot()
    assert d.position is None
    assert _coils(d.request(True, 0, force=True)) == [("set", 60)]
    d.poll(200)
    assert d.position is True
    assert d.request(True, 5000) == []  # already there


def test_driver_retries_with_backoff_then_reports_failure():
    d = _driver(feedback=True, retries=2, retry_backoff_ms=1000, min_interval_ms=100)
    d.feedback(True, 0)  # welded closed
    d.boot()
    assert _coils(d.request(False, 0)) == [("reset", 60)]
    pulses = 1
    t = 0
    finding = None
    while finding is None and t < 100000:
        t = d.deadline()
        acts, finding = d.poll(t)
        pulses += len(acts)
    assert pulses == 3  # first try + 2 retries
    assert finding == ("failed", False, True, 3)
    assert d.failed


def test_driver_reports_a_contact_that_moves_by_itself():
    d = _driver(feedback=True)
    d.feedback(True, 0)
    d.boot()
    d.request(True, 0)
    d.poll(500)
    assert d.feedback(False, 1000) == ("moved", True, False)
