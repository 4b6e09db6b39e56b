"""pytest collects tests/portable/test_*.py natively too: give those runs a private scratch parent."""

import pytest

from portable import scratch


@pytest.fixture(autouse=True)
def _scratch_parent(tmp_path, monkeypatch):
    monkeypatch.setenv("PMETER_TEST_TMP", str(tmp_path))
    monkeypatch.setattr(scratch, "_parent", [])
