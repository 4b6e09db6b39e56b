"""The portable checks' scratch directories: under the caller's parent, empty, one per tag."""

import os

from portable.scratch import scratch_dir


def test_scratch_dir_is_private_and_empty():
    d = scratch_dir("scratch-check")
    parent = os.getenv("PMETER_TEST_TMP")
    # Every caller in the suite names its own parent (pytest's tmp_path).
    assert parent and d == parent + "/scratch-check", (parent, d)
    with open(d + "/left-over", "w") as f:
        f.write("x")
    assert scratch_dir("scratch-check") == d and os.listdir(d) == []
    assert scratch_dir("other") != d
