"""Run plain-assert test modules on MicroPython (which has no unittest/pytest).

    MICROPYPATH=.:tests .venv/bin/micropython -X heapsize=128K \\
        tests/mpy_runner.py portable.test_smoke_events [more modules...]

Imports each module by name, calls every ``test_*`` function in it (sorted
by name: MicroPython's dicts have no order), prints one line per test and a
summary line ``N passed, N failed``, and exits 1 if anything failed or a
module had no tests.  Also runs under CPython (same command with python).
"""

import gc
import sys


def _print_exception(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)  # MicroPython
    else:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)


def _load(name):
    __import__(name)
    return sys.modules[name]


def run_module(name):
    """Run the tests of module ``name``; return (passed, failed)."""
    try:
        module = _load(name)
    except Exception as exc:
        print("ERROR %s: import failed" % name)
        _print_exception(exc)
        return 0, 1
    names = sorted(n for n in dir(module) if n.startswith("test_") and callable(getattr(module, n)))
    if not names:
        print("ERROR %s: no test_* functions" % name)
        return 0, 1
    passed = failed = 0
    for test in names:
        gc.collect()
        try:
            getattr(module, test)()
        except Exception as exc:
            failed += 1
            print("FAIL %s.%s" % (name, test))
            _print_exception(exc)
        else:
            passed += 1
            print("ok   %s.%s" % (name, test))
    return passed, failed


def main(argv):
    """Run each module named in ``argv``; return the process exit code."""
    if not argv:
        print("usage: mpy_runner.py MODULE [MODULE...]")
        return 2
    passed = failed = 0
    for name in argv:
        p, f = run_module(name)
        passed += p
        failed += f
    impl = sys.implementation.name
    print("%s: %d passed, %d failed" % (impl, passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
