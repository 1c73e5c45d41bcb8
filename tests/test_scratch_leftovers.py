# The firmware tests leave nothing in the temp folder (session 14: a developer's /tmp held
# 10,929 jnl* folders and 13,111 ppmid-jt-*.img flash images of earlier runs). Each check
# runs firmware test files with TMPDIR set to an empty folder of its own and looks at it
# after: tests/firmware/scratch_files.py makes every scratch file and folder they use there.
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import FIRMWARE_DIR, FIRMWARE_TESTS, ROOT, micropython_binary

# files whose tests make flash images or folders (fresh_root), OTA partitions (image slots)
# and board definitions on the host, each with one such test it must run under both
# interpreters (pytest -v names a test the same for both: it is listed twice)
MAKERS = {
    "test_relay_support.py": "test_fresh_root_is_empty_and_writable",
    "test_install.py": "test_a_whole_install_renames_deletes_the_leftovers_and_removes_the_staging_dir",
    "test_board_image_slots.py": "test_blocks_written_read_back",
    "test_board_esp32.py": "test_a_bad_definition_is_a_board_error",
}


def _left_in(folder):
    return sorted(os.listdir(folder))


def test_a_firmware_test_run_under_both_interpreters_leaves_nothing_in_tmpdir(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "basetemp")]
    cmd += [os.path.join("tests", "firmware", name) for name in MAKERS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name, test in MAKERS.items():
        runs = re.findall(r"^tests/firmware/%s::%s PASSED" % (re.escape(name), test), proc.stdout, re.M)
        assert len(runs) == 2, (name, test, proc.stdout[-3000:])
    assert _left_in(tmp) == []


def test_a_killed_micropython_test_run_leaves_no_flash_image(tmp_path):
    # the MicroPython side's flash images are open files whose names are gone already: a run
    # that times out (the runner kills it) or crashes leaves none either
    exe = micropython_binary()
    if not exe:
        pytest.skip("no `micropython` interpreter")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = tmp_path / "hold.py"
    script.write_text("import sys\nsys.path.insert(0, %r)\nsys.path.insert(0, %r)\n"
                      "from test_relay_support import fresh_root\n"
                      "import test_board_image_slots\n"
                      "roots = [fresh_root() for _ in range(3)]\n"
                      "hw = test_board_image_slots._hw()\n"
                      "print('made', roots)\n"
                      "sys.stdin.readline()\n" % (FIRMWARE_DIR, FIRMWARE_TESTS))
    proc = subprocess.Popen([exe, str(script)], cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("made ['/jt1', '/jt2', '/jt3']"), line + proc.stdout.read()
        # the three flashes and the three partition files are open in the process, not in the folder
        fds = os.listdir("/proc/%d/fd" % proc.pid)
        targets = [os.readlink("/proc/%d/fd/%s" % (proc.pid, fd)) for fd in fds]
        held = [t for t in targets if t.startswith(str(tmp) + "/")]
        assert len(held) == 6 and all(t.endswith(" (deleted)") for t in held), targets
        assert _left_in(tmp) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert _left_in(tmp) == []
