"""Shared pytest fixtures.

Brokers (see tests/mosquitto.py for the options):

- ``mosquitto``: a plain, anonymous Mosquitto on a free loopback port, one
  per test session (per xdist worker); use ``mosquitto.host`` and
  ``mosquitto.port``.  Use topics unique to your test: the broker is shared.
- ``mosquitto_factory``: ``mosquitto_factory(tls=..., password_file=...,
  acl_file=..., extra_lines=[...])`` starts a broker of your own, stopped
  when the test ends.
"""

import os

import pytest
from hypothesis import settings

from mosquitto import Broker

# Seeded randomness: every run (and CI) explores the same examples, so a
# failure is reproducible and the suite cannot turn red by chance.  Set
# HYPOTHESIS_PROFILE=explore to search new examples locally.
settings.register_profile("seeded", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """A running plain Mosquitto shared by the session's tests."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path):
    """Start brokers with custom configs; all are stopped at teardown."""
    started = []

    def make(**options):
        broker = Broker(tmp_path / ("mosquitto-%d" % len(started)), **options)
        started.append(broker)
        return broker.start()

    yield make
    for broker in started:
        broker.stop()
