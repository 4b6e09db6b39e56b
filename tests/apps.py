"""The CPython tests' way to build a meter endpoint: through agent/app.py, as
every runtime does (the config a head-end's fleet keys imply)."""

import os

from agent import settings
from agent.app import App
from agent.store import OsFS


def fleet_app(fleet, meter_id, store_dir, account=None, link=None, **options):
    """An App for ``meter_id`` with ``fleet``'s keys and its store in ``store_dir``.

    ``account`` and ``link`` add to those config sections (the account
    trips at once by default); ``options`` go to ``App`` (on_clock, ...).
    """
    acc = {"opening_balance": 0, "trip_delay_s": 0}
    acc.update(account or {})
    cfg = settings.validate({
        "meter": {"id": meter_id},
        "account": acc,
        "tokens": {"key": fleet.meter_key(meter_id).hex()},
        "link": dict(link or {}, key=fleet.link_key(meter_id).hex()),
        "agent": {"fw": "test"},
    })
    os.makedirs(str(store_dir), exist_ok=True)
    return App(cfg, OsFS(), str(store_dir), os.urandom(8), **options)
