"""`ppmid deploy` failure paths: nothing reaches the board unless everything compiled, the
port is a MicroPython REPL of the right architecture, and every copied file verified."""
import os
import shutil
import subprocess
import sys

import pytest

from host_tools import boards, deploy
from host_tools.deploy import DeployError
from host_tools.boards import FIRMWARE_DIR as FIRMWARE
from host_tools.emuboard import EmulatedBoard
from tests.conftest import changed_firmware_copy

ROOT = boards.ROOT


def ppmid(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_help_lists_platform_commands():
    p = ppmid("--help")
    assert p.returncode == 0
    for name in ("board", "deploy", "flash"):
        assert "\n    %s " % name in p.stdout or "  %s  " % name in p.stdout


def test_build_compiles_package_to_mpy_and_keeps_scripts(tmp_path):
    out, files, cmds = deploy.build("esp32-devkitc", build_dir=str(tmp_path / "b"))
    assert "boot.py" in files and "main.py" in files and "board.json" in files
    assert "ppmid/app.mpy" in files and not any(f.startswith("ppmid/") and f.endswith(".py") for f in files)
    # an ESP32 has no use for the emulated board's support (board.json "firmware_exclude")
    assert "ppmid/board/esp32.mpy" in files
    assert "ppmid/board/emulated.mpy" not in files and "ppmid/board/ptyuart.mpy" not in files
    assert not os.path.exists(os.path.join(out, "ppmid", "board", "emulated.mpy"))
    assert all("-march=xtensawin" in c for c in cmds)
    with open(os.path.join(out, "ppmid", "app.mpy"), "rb") as f:
        head = f.read(4)
    assert head[0:1] == b"M" and head[1] == 6


def _host_only_modules():
    root = os.path.join(FIRMWARE, "ppmid")
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, n), os.path.dirname(root)).replace(os.sep, "/")
                for n in names if n.endswith(deploy.HOST_ONLY_SUFFIX)]
    return sorted(out)


@pytest.mark.parametrize("board", ["emulated", "esp32-devkitc"])
def test_no_board_gets_the_host_only_modules_and_nothing_on_a_board_imports_one(tmp_path, board):
    # the package's *_host.py modules are the host tools' halves: deployed, they cost flash
    # and ~130 bytes of every update offer each (a format-1 offer of the emulated board went
    # 18 bytes over the gateway's 16,384-byte packet cap in session 14); left out, nothing
    # that runs on a board may import one
    import ast
    host_only = _host_only_modules()
    assert len(host_only) >= 6, host_only
    _, files, _ = deploy.build(board, build_dir=str(tmp_path / "b"))
    assert not [f for f in files if f.endswith("_host.mpy") or f.endswith("_host.py")], files
    names = set(m[:-3].replace("/", ".") for m in host_only)
    for rel, _ in deploy.firmware_files(FIRMWARE):
        tree = ast.parse(open(os.path.join(FIRMWARE, rel)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                got = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                got = [node.module] + [node.module + "." + a.name for a in node.names]
            else:
                continue
            bad = [g for g in got if g in names]
            # (envelope.py's fallback for host-only names turns a missing module into
            # AttributeError: checked below)
            assert not bad or rel == "ppmid/envelope.py", (rel, bad)


def test_the_envelopes_host_only_names_are_missing_attributes_on_a_board(monkeypatch):
    # a board has no ppmid/envelope_host: envelope.X for one of its names is AttributeError
    # (hasattr/getattr with a default work), not ImportError
    import sys
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid import envelope
    import ppmid
    monkeypatch.setitem(sys.modules, "ppmid.envelope_host", None)   # `import` of it fails
    # (and `from ppmid import envelope_host` would find the package's attribute, bound by
    # an earlier import in this process: as on a board, there is none)
    monkeypatch.delattr(ppmid, "envelope_host", raising=False)
    assert not hasattr(envelope, "from_json") and getattr(envelope, "sign", 7) == 7


def test_a_deployed_module_names_itself_as_it_lies_on_the_board_with_one_interned_name(tmp_path):
    # each .mpy carries the path the board's importer finds it at (sys.path '' at the flash
    # root, where the deploy installs the package), so its __file__ and the name in its
    # tracebacks are one interned name (docs/memory.md, session 9)
    assert deploy.source_name(os.path.join("ppmid", "relay", "core.py")) == "ppmid/relay/core.mpy"
    out, files, cmds = deploy.build("emulated", build_dir=str(tmp_path / "b"))
    app = [c for c in cmds if c[-1].endswith(os.path.join("ppmid", "app.py"))][0]
    assert app[app.index("-s") + 1] == "ppmid/app.mpy"
    probe = ("import sys, micropython\n"
             "sys.path[:] = ['', '.frozen']\n"  # the board's (the emulated ROM's; /lib unused here)
             "import ppmid.errors\n"
             "print(ppmid.errors.__file__)\n"
             "try:\n"
             "    str(ppmid.errors.PpmidError(1, 'x'))\n"  # fails inside the firmware's __str__
             "except TypeError as e:\n"
             "    sys.print_exception(e)\n"
             "micropython.qstr_info(1)\n")
    p = subprocess.run([boards.micropython_binary(), "-c", probe], cwd=out, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "ppmid/errors.mpy"
    assert 'File "ppmid/errors.mpy", line 1, in __str__' in p.stdout  # -O3: no line numbers
    # qstr_info(1) lists every interned name: the file's name once, no "ppmid/errors.py"
    assert sum(1 for line in lines if line.startswith("Q(") and "errors" in line and "ppmid/" in line) == 1, \
        [line for line in lines if "errors" in line]


def test_a_board_too_small_for_the_app_is_refused_with_the_figures(tmp_path):
    need, _ = deploy.app_heap_need()
    p = ppmid("deploy", "--port", str(tmp_path / "ttyUSB0"), "--board", "esp32-devkitc", "--dry-run")
    assert p.returncode == 1 and p.stdout == ""
    err = p.stderr.strip()
    assert err.startswith("ppmid: E_DEPLOY: board esp32-devkitc has a 112640-byte Python heap (board.json heap 110K)")
    assert "the app needs %d bytes" % need in err and "boards/app_heap.json" in err
    assert "make image BOARD=esp32-devkitc" in err and "--scripts-only" in err and "--force" in err
    assert len(err.splitlines()) == 1
    # refused before the port is looked at
    with pytest.raises(DeployError, match="would not fit"):
        deploy.deploy(str(tmp_path / "ttyUSB0"), "esp32-devkitc")
    # a board whose heap holds the app's need goes on to the port (the C3's 150K estimate
    # has held it since session 7's memory work took the need below 153,600 bytes)
    from host_tools import boards
    c3 = boards.heap_bytes(boards.load_board("esp32c3-devkitm-1")["heap"])
    if need <= c3:
        with pytest.raises(DeployError, match="does not exist"):
            deploy.deploy(str(tmp_path / "ttyUSB0"), "esp32c3-devkitm-1")
    else:
        with pytest.raises(DeployError, match="would not fit"):
            deploy.deploy(str(tmp_path / "ttyUSB0"), "esp32c3-devkitm-1")


@pytest.mark.usefixtures("tmpdir_in_tmp_path")  # the --dry-run's build folder
def test_frozen_route_and_force_and_the_reference_board_pass(tmp_path):
    port = str(tmp_path / "ttyUSB0")
    p = ppmid("deploy", "--port", port, "--board", "esp32-devkitc", "--scripts-only", "--dry-run")
    assert p.returncode == 0, p.stderr
    copy = [line for line in p.stdout.splitlines() if " fs mkdir " in line]
    # the scripts and the install module beside them, not the package
    assert len(copy) == 1 and "ppmid/" not in copy[0] and "main.py" in copy[0] and "install.mpy" in copy[0]
    p = ppmid("deploy", "--port", port, "--board", "esp32-devkitc", "--force", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "WARNING: board esp32-devkitc has a 112640-byte Python heap" in p.stdout and "--force" in p.stdout
    assert "ppmid/app.mpy" in [line for line in p.stdout.splitlines() if " fs mkdir " in line][0]
    p = ppmid("deploy", "--port", port, "--board", "esp32s3-devkitc-1-n8r8", "--dry-run")
    assert p.returncode == 0 and "WARNING" not in p.stdout, p.stderr


def test_the_need_comes_from_app_heap_json(tmp_path, monkeypatch):
    path = tmp_path / "app_heap.json"
    path.write_text('{"peak_4kb_command_bytes": 3000000, "measured": "today", "by": "a test"}')
    monkeypatch.setattr(deploy, "APP_HEAP_JSON", str(path))
    with pytest.raises(DeployError, match="the app needs 3000000 bytes"):
        deploy.deploy("/dev/null", "esp32s3-devkitc-1-n8r8", dry_run=True)
    path.write_text("{}")
    with pytest.raises(DeployError, match="cannot read the app's heap need"):
        deploy.deploy("/dev/null", "esp32s3-devkitc-1-n8r8", dry_run=True)


def test_native_arch_matches_the_unix_port():
    arch = deploy.native_arch()
    assert arch in deploy.MPY_ARCHS
    c3 = boards.load_board("esp32c3-devkitm-1")
    assert deploy.board_arch(c3) == "rv32imc"


def test_unknown_board_and_missing_port(tmp_path):
    p = ppmid("deploy", "--port", "/dev/null", "--board", "nope")
    assert p.returncode == 1 and "unknown board 'nope'" in p.stderr
    p = ppmid("deploy", "--port", str(tmp_path / "no-such-port"), "--board", "emulated")
    assert p.returncode == 1 and "does not exist" in p.stderr
    p = ppmid("deploy", "--port", "/dev/null", "--board", "emulated", "--attempts", "0")
    assert p.returncode == 1 and p.stderr.strip() == "ppmid: E_DEPLOY: --attempts must be 1 or more (got 0)"


def test_port_that_is_not_a_repl(tmp_path, monkeypatch):
    # a pty nobody answers on stays silent however long the probe waits: 2 s per probe
    # (the first and the one more) say the same as the real 8 s, which cost 16 s here
    monkeypatch.setattr(deploy, "PROBE_TIMEOUT_S", 2)
    master, slave = os.openpty()
    try:
        with pytest.raises(DeployError, match="not a MicroPython REPL"):
            deploy.deploy(os.ttyname(slave), "emulated")
    finally:
        os.close(master)
        os.close(slave)


def test_compile_error_and_wrong_arch_leave_the_board_untouched(tmp_path):
    fw = tmp_path / "fw"
    shutil.copytree(boards.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    (fw / "ppmid" / "zz_broken.py").write_text("def oops(:\n    pass\n")
    with EmulatedBoard(tmp_path / "board") as b:
        b.exec("with open('/keep.txt', 'w') as f: f.write('old')")
        before = b.exec("import os; print(sorted(os.listdir('/')))")
        p = ppmid("deploy", "--port", b.repl, "--board", "emulated", "--firmware-dir", str(fw))
        assert p.returncode == 1
        assert "ppmid/zz_broken.py does not compile" in p.stderr
        with pytest.raises(DeployError, match="wrong --board") as refused:
            deploy.deploy(b.repl, "esp32s3-devkitc-1-n8r8")
        # the emulated board reports the chip of the definition it emulates, named with the other
        assert "reports chip unix" in str(refused.value) and "defined for esp32s3" in str(refused.value)
        assert b.exec("import os; print(sorted(os.listdir('/')))") == before
        assert b.restarts == 0


XTENSAWIN_MPY = deploy.MPY_VERSION | (deploy.MPY_ARCHS.index("xtensawin") << 10)


@pytest.mark.parametrize("board,reported,ok", [
    ("esp32-devkitc", "ESP32", True),
    ("esp32-devkitc", "ESP32S3", False),            # same .mpy arch, other chip: refused
    ("esp32s3-devkitc-1-n8r8", "ESP32S3", True),
    ("esp32s3-devkitc-1-n8r8", "ESP32", False),
    ("esp32s3-devkitc-1", "ESP32-S3", True),        # a board file spelling the MCU with a hyphen
    ("esp32-devkitc", "?", False),                  # no chip in the answer: not taken on trust
])
def test_probe_refuses_another_esp32_variant_before_copying(board, reported, ok, tmp_path, monkeypatch):
    # the probe's answer as an ESP32 port prints it (sys.platform is "esp32" on every variant)
    port = tmp_path / "ttyUSB0"
    port.write_text("")
    answer = "@@PROBE micropython %d esp32 %s\n" % (XTENSAWIN_MPY, reported)
    sent = []
    monkeypatch.setattr(deploy, "_exec", lambda p, code, what, timeout=30, **kw: sent.append(code) or answer)
    definition = boards.load_board(board)
    if ok:
        assert deploy.probe(str(port), "xtensawin", definition) == XTENSAWIN_MPY
    else:
        with pytest.raises(DeployError) as refused:
            deploy.probe(str(port), "xtensawin", definition)
        msg = str(refused.value)
        assert "reports chip %s" % reported in msg and "board %s is defined for %s" % (board, definition["chip"]) in msg
        assert "nothing was copied" in msg
    assert len(sent) == 1   # the probe only: nothing else went to the board
    # without a definition (the arch alone) both pass, as before
    assert deploy.probe(str(port), "xtensawin") == XTENSAWIN_MPY


def test_probe_script_reads_the_chip_from_machine():
    # the probe script's reading of sys.implementation._machine, under the real unix port
    from host_tools import board_scripts
    code = board_scripts.source("deploy_probe.py") + "\n"
    calls = "".join("print(_mcu(%r))\n" % m for m in (
        "Generic ESP32S3 module with ESP32S3", "ESP32C3 module with ESP32C3", "ESP32 module with ESP32",
        "linux [GCC 14.2.1] version"))
    p = subprocess.run([boards.micropython_binary(), "-c", code + calls], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ESP32S3", "ESP32C3", "ESP32", "linux"]
    assert [deploy.same_chip(c, "esp32s3") for c in p.stdout.split()] == [True, False, False, False]


def test_redeploy_removes_stale_modules(tmp_path):
    fw = tmp_path / "fw"
    shutil.copytree(boards.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    (fw / "ppmid" / "zz_extra.py").write_text("X = 1\n")
    with EmulatedBoard(tmp_path / "board") as b:
        b.deploy(firmware_dir=str(fw))
        assert "zz_extra.mpy" in b.exec("import os; print(os.listdir('/ppmid'))")
        # a stale source file would shadow the .mpy: deploy must remove it too
        b.exec("with open('/ppmid/app.py', 'w') as f: f.write('raise ImportError')")
        (fw / "ppmid" / "zz_extra.py").unlink()
        b.deploy(firmware_dir=str(fw))
        out = b.exec("import os; print(sorted(os.listdir('/ppmid')), os.listdir('/'))")
        assert "zz_extra" not in out and "app.py" not in out and ".deploy-new" not in out


def test_scripts_only_removes_the_package(tmp_path, deployed_board):
    # for an image with ppmid frozen in; on the plain emulated board main.py then cannot
    # import it, and says so on the console
    with deployed_board(tmp_path) as b:   # firmware/ deployed: its app runs
        b.wait_ready(60, since=0)
        mark = b.mark()
        deploy.deploy(b.repl, "emulated", scripts_only=True)
        b.wait_for(r"ImportError: no module named 'ppmid", since=mark)
        out = b.exec("import os; print(sorted(os.listdir('/')))")
        assert out.strip() == "['board.json', 'boot.py', 'install.mpy', 'main.py']"


def _firmware_v2(tmp_path):
    """A copy of firmware/ in which every file differs (so a deploy copies them all), version 9.x.y."""
    fw = changed_firmware_copy(tmp_path / "fw2", "9")
    # a big module (never imported) so that the copy takes a while
    (fw / "ppmid" / "zz_big.py").write_text("DATA = %r\n" % (bytes(range(256)) * 1600))
    return fw


def test_power_cut_during_deploy_keeps_the_old_firmware(tmp_path, deployed_board):
    import signal
    import time
    fw2 = _firmware_v2(tmp_path)
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed: its app runs
        old = b.wait_ready(60, since=0).group(1).decode()
        # one attempt: this test is about the power cut, not the resume after it (below).
        # `ppmid deploy` itself, with the copy's stall cut at 2 s as quick_stall's (below):
        # the emulated board's pty moves ~400 KB/s, so a copy that has not moved for 2 s has
        # lost its board; the default 10 s (a UART's) was 10 s of this test's 22 s spent waiting
        cli = ("import sys; from host_tools import deploy; deploy.COPY_STALL_S = 2; "
               "from host_tools.cli import main; sys.exit(main(sys.argv[1:]))")
        p = subprocess.Popen([sys.executable, "-c", cli, "deploy", "--port", b.repl, "--board", "emulated",
                              "--firmware-dir", str(fw2), "--attempts", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            for line in p.stdout:
                if "files changed" in line:
                    break
            time.sleep(0.5)  # into the copy of ~50 files and 400 KB
            mark = b.mark()
            b.kill()
            m = b.wait_ready(since=mark)
            assert p.poll() is None or p.returncode != 0, "the deploy finished before the power cut"
            rest = p.communicate(timeout=120)[0]
            assert p.returncode == 1 and "did not complete in 1 attempts" in rest, rest
            assert "nothing installed, the old firmware is untouched" in rest
        finally:
            # a deploy that lost its board mid-copy may wait on mpremote: stop it, as a user would
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        assert m.group(1).decode() == old  # the old firmware, whole
        # and the next deploy goes through
        assert b.deploy(firmware_dir=str(fw2)).group(1).decode() == "9." + old
        assert ".deploy-new" not in b.exec("import os; print(os.listdir('/'))")


def test_mpremote_works_against_the_running_app(tmp_path, deployed_board):
    script = tmp_path / "hello.py"
    script.write_text("import os\nprint('RUN', sorted(os.listdir('/'))[:2])\n")
    note = tmp_path / "note.txt"
    note.write_text("hello board\n")
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed
        b.wait_ready(60, since=0)  # the app is now running main.py
        out = boards.mpremote(b.repl, ["fs", "cp", str(note), ":note.txt", "+", "fs", "ls", "+",
                                         "run", str(script), "+", "fs", "cat", ":note.txt"])
        assert "note.txt" in out and "RUN ['board.json', 'boot.py']" in out and "hello board" in out
        assert "KeyboardInterrupt" in b.console_text()  # mpremote's Ctrl-C stopped main.py


# -- resumable staging: a board that resets mid-copy (review 54 F12, docs/platform.md)

# The resume test's board: its console moves bytes as a UART at 921,600 baud would (8N1,
# 92 KB/s), so how much of a copy lands in the watchdog's 2 s window no longer depends on the
# host's speed (the ptys alone move ~400 KB/s here, and a fast CI host copied all of a 1.2 MB
# set within the window once). A real DevKitC's console runs at 115,200.
RESUME_BAUD = 921600


def _firmware_big(tmp_path, n=24, size=8192):
    """firmware/ plus n never-imported modules of ~size bytes each (192 KB): through the
    resume test's console (RESUME_BAUD) its copy takes ~6 s of mpremote's 256-byte writes,
    three of the 2 s watchdog windows, in files small enough that every window lands some."""
    fw = tmp_path / "fwbig"
    shutil.copytree(boards.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    for i in range(n):
        (fw / "ppmid" / ("zz_big%d.py" % i)).write_text("DATA = %r\n" % (bytes([i]) + bytes(range(256)) * (size // 256)))
    return fw


def _local_hashes(tmp_path, fw, name="local"):
    out, files, _ = deploy.build("emulated", str(fw), str(tmp_path / name))
    return {f: deploy.sha256_file(os.path.join(out, f)) for f in files}


@pytest.fixture
def quick_stall(monkeypatch):
    # the emulated board's pty moves some 400 KB/s: a copy that stalls for 2 s has lost the
    # board (a UART's 10 s would make each reset cost that much more waiting)
    monkeypatch.setattr(deploy, "COPY_STALL_S", 2)
    # and a board script silent for 6 s has too: the app the probe stopped no longer feeds
    # the 2 s watchdog, so a board quiet for three times that (mpremote's own start
    # included, slow on a loaded host) has reset; STALL_S's 15 s made an install or a hash
    # the watchdog cut cost 15 s of waiting
    monkeypatch.setattr(deploy, "STALL_S", 6)


def test_watchdog_reset_mid_copy_resumes_until_installed(tmp_path, quick_stall, deployed_board):
    fw = _firmware_big(tmp_path)
    local = _local_hashes(tmp_path, fw)
    big = sorted(f for f in local if "zz_big" in f)
    # firmware/ deployed (not through this slow console: the copy to resume is the next one)
    with deployed_board(tmp_path / "board", wdt_max_ms=2000, repl_baud=RESUME_BAUD) as b:
        old = b.wait_ready(60, since=0).group(1).decode()   # the app runs and arms its (capped) watchdog
        # one attempt only: the watchdog ends it; a clear error, the old firmware stays
        said = []
        mark = b.mark()
        with pytest.raises(DeployError) as failed:
            deploy.deploy(b.repl, "emulated", firmware_dir=str(fw), log=said.append, attempts=1)
        msg = str(failed.value)
        assert "did not complete in 1 attempts" in msg and "nothing installed, the old firmware is untouched" in msg
        assert "run the same deploy again to resume" in msg
        staged = int(msg.split(" of %d changed files staged" % len(big))[0].rsplit(" ", 1)[1])
        # how many land in the 2 s window depends on the host's speed below the console's
        # rate: never all of them, and what landed must not be copied again
        assert staged < len(big), "the watchdog did not cut the first attempt short"
        b.wait_for(r"watchdog expired", since=mark)
        assert b.exec("import os; print(os.listdir('/ppmid'))").count("zz_big") == 0
        # the next run keeps what was staged, rides out more resets, and installs
        said = []
        mark = b.mark()
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw), log=said.append)
        assert b.wait_ready(since=mark).group(1).decode() == old
        resumed = [s for s in said if s.startswith("resumed: ")]
        if staged:
            assert resumed and resumed[0].startswith("resumed: %d of %d files already staged" % (staged, len(big)))
            assert "copied and verified %d files" % (len(big) - staged) in said or \
                any(s.startswith("board lost (") for s in said), said
        # whatever the first attempt staged (none when the host was slow enough that its
        # probe took the whole window), the resume is tested: the big files' copy is longer
        # than one watchdog window at the console's rate (192 KB at 92 KB/s, 2.1 s of 2 s),
        # so the installing run itself was cut with files staged at least once, and an
        # attempt went on from them
        assert any(int(s.split()[1]) > 0 for s in resumed), said
        # whether the watchdog strikes again in this run depends on the host's speed too: a
        # run it cuts goes on from the board's staged files ("board lost ... probing again")
        # the app that now runs arms the 2 s watchdog too: look again if it resets under us
        assert _with_watchdog(b, lambda: deploy.board_hashes(b.repl, sorted(local), "")) == local
        assert ".deploy-new" not in _with_watchdog(b, lambda: b.exec("import os; print(os.listdir('/'))"))


def _with_watchdog(b, look, tries=5):
    for _ in range(tries - 1):
        mark = b.mark()
        try:
            return look()
        except (DeployError, boards.BoardError):
            b.wait_ready(since=mark)
    return look()


def test_staged_files_are_checked_and_another_builds_staging_is_emptied(tmp_path):
    local = _local_hashes(tmp_path, boards.FIRMWARE_DIR)
    build = deploy.build_id(local)
    src = tmp_path / "local"
    with EmulatedBoard(tmp_path / "board") as b:   # a fresh board: no app, no watchdog
        # an interrupted deploy of this build: three files staged whole, one corrupted
        b.exec("import os\nfor d in ('/.deploy-new', '/.deploy-new/ppmid'): os.mkdir(d)\n"
               "with open('/.deploy-new/.build', 'w') as f: f.write(%r)" % build)
        good = ["ppmid/app.mpy", "ppmid/config.mpy", "main.py"]
        boards.mpremote(b.repl, ["fs", "cp", str(src / good[0]), str(src / good[1]), ":/.deploy-new/ppmid/", "+",
                                 "fs", "cp", str(src / good[2]), ":/.deploy-new/"])
        b.exec("with open('/.deploy-new/ppmid/errors.mpy', 'wb') as f: f.write(b'M\\x06 half a file')")
        said = []
        deploy.deploy(b.repl, "emulated", log=said.append, reset=False)
        assert "resumed: 3 of %d files already staged" % len(local) in said
        assert "copied and verified %d files" % (len(local) - 3) in said   # the corrupted one again
        assert deploy.board_hashes(b.repl, sorted(local), "") == local

        # a staging dir of another build (or an interrupted start): emptied, nothing of it used
        b.exec("import os\nfor d in ('/.deploy-new', '/.deploy-new/ppmid'): os.mkdir(d)\n"
               "for p, d in (('.build', '0123456789abcdef'), ('stray.txt', 'x'), ('ppmid/zz_new.mpy', 'other')):\n"
               "    with open('/.deploy-new/' + p, 'w') as f: f.write(d)")
        fw = tmp_path / "fw"
        shutil.copytree(boards.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
        (fw / "ppmid" / "zz_new.py").write_text("X = 2\n")
        local2 = _local_hashes(tmp_path, fw, "local2")
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw), log=said.append, reset=False)
        assert not any(s.startswith("resumed") for s in said)
        assert "/.deploy-new held another build's files (or an interrupted start): emptied" in said
        assert "copied and verified 1 files" in said
        assert deploy.board_hashes(b.repl, sorted(local2), "") == local2
        assert ".deploy-new" not in b.exec("import os; print(os.listdir('/'))")


def test_a_stalled_mpremote_is_cut_and_reported_as_a_lost_board():
    # mpremote that started a file and then hears nothing (a board that reset under it)
    cmd = [sys.executable, "-c", "import time; print('cp a :b', flush=True); time.sleep(30)"]
    with pytest.raises(deploy.BoardLost, match="no progress for 1 s"):
        deploy._run_mpremote(cmd, "copy", timeout=20, stall_s=1, progress=None)
    # a copy whose progress bar moves is left alone however long it takes
    cmd = [sys.executable, "-c", "import time\nfor i in range(8): print('\\r ... copying %d%%' % i, end=''); time.sleep(0.4)"]
    assert "copying 7%" in deploy._run_mpremote(cmd, "copy", timeout=20, stall_s=1, progress=None)
    # lines that are not progress (an app's log after a reset) do not keep it alive
    cmd = [sys.executable, "-c", "import time\nfor i in range(30): print('PPMID log', flush=True); time.sleep(0.1)"]
    with pytest.raises(deploy.BoardLost, match="no progress"):
        deploy._run_mpremote(cmd, "hash", timeout=20, stall_s=1)
    cmd = [sys.executable, "-c", "import sys; print('@@H a 00'); print('could not enter raw repl'); sys.exit(1)"]
    with pytest.raises(deploy.BoardLost, match="mpremote failed: could not enter raw repl"):
        deploy._run_mpremote(cmd, "hash", timeout=20, stall_s=5)
    assert deploy._run_mpremote([sys.executable, "-c", "print('@@H a 00')"], "hash", 20, stall_s=5) == "@@H a 00\n"
    # what mpremote said on failure comes without its progress bar
    cmd = [sys.executable, "-c", "import sys; print('cp a :b'); print('\\r ... copying  27% [#####-----]', end='');"
                                 "print('mpremote: Error with transport:'); sys.exit(1)"]
    with pytest.raises(deploy.BoardLost) as lost:
        deploy._run_mpremote(cmd, "copy", timeout=20, stall_s=5, progress=None)
    assert str(lost.value) == "copy: mpremote failed: mpremote: Error with transport:"


def test_a_script_that_raises_on_the_board_is_not_a_lost_board():
    # mpremote exits 1 for both; the traceback through "<stdin>" (the sent script) is the
    # board's answer: said, not retried
    board = ("import sys; print('@@R boot.py'); print('Traceback (most recent call last):');"
             "print('  File \"<stdin>\", line 38, in <module>'); print('OSError: [Errno 28] ENOSPC'); sys.exit(1)")
    for stall_s in (None, 5):
        with pytest.raises(deploy.BoardScriptFailed) as failed:
            deploy._run_mpremote([sys.executable, "-c", board], "install on p", timeout=20, stall_s=stall_s)
        assert str(failed.value) == ("install on p: the board's script raised OSError: [Errno 28] ENOSPC "
                                     "(the board did not reset; not retried)"), failed.value
        assert not isinstance(failed.value, deploy.BoardLost)
    # mpremote's own traceback (the host's, a serial port gone) is still a lost board
    host = ("import sys; print('Traceback (most recent call last):');"
            "print('  File \"/usr/lib/python3/serial/serialposix.py\", line 5, in read');"
            "print('serial.serialutil.SerialException: device reports readiness to read but returned no data');"
            "sys.exit(1)")
    with pytest.raises(deploy.BoardLost):
        deploy._run_mpremote([sys.executable, "-c", host], "install on p", timeout=20, stall_s=5)


def test_a_silent_first_probe_gets_one_more_before_the_port_is_called_no_repl(tmp_path, monkeypatch):
    # CI saw a board in the first boot of a new image leave its REPL silent for the probe's
    # 8 s under load: the deploy then said "not a MicroPython REPL" of a board. One more probe
    # now; a port that does not exist still fails at once, and a second silence is final
    port = tmp_path / "pty"
    port.write_text("")
    calls, said = [], []

    def probe_stage(p, arch, definition=None, build=None):
        calls.append(p)
        if len(calls) == 1 or os.path.basename(p).startswith("mute"):
            raise deploy.BoardLost("port %s is not a MicroPython REPL (no progress for 8 s)" % p)
        return (6, "none", {}, set())
    monkeypatch.setattr(deploy, "probe_stage", probe_stage)
    assert deploy._first_probe(str(port), "x64", None, "b", said.append) == (6, "none", {}, set())
    assert len(calls) == 2 and said and said[0].endswith("probing once more (a board busy with its boot answers late)")
    calls.clear()
    with pytest.raises(deploy.BoardLost, match="not a MicroPython REPL"):
        deploy._first_probe(str(tmp_path / "mute"), "x64", None, "b", said.append)   # no such port:
    assert len(calls) == 1                                                             # at once
    (tmp_path / "mute2").write_text("")
    calls.clear()
    with pytest.raises(deploy.BoardLost, match="not a MicroPython REPL"):
        deploy._first_probe(str(tmp_path / "mute2"), "x64", None, "b", said.append)
    assert len(calls) == 2
