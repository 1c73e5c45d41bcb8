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


# ---- host_tools commands that make temp files --------------------------------------------
def _ppmid(tmp, *args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp)), timeout=300)


def test_a_deploy_that_fails_after_its_build_leaves_no_build_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = _ppmid(tmp, "deploy", "--port", str(tmp_path / "ttyUSB0"), "--board", "esp32s3-devkitc-1-n8r8")
    assert p.returncode == 1 and "E_DEPLOY" in p.stderr and "does not exist" in p.stderr, p.stderr
    # it built into a temp folder of its own (said on stdout) before the port was refused
    built = re.search(r"built \d+ files .* in (\S+)", p.stdout)
    assert built and os.path.dirname(built.group(1)) == str(tmp), p.stdout
    assert _left_in(tmp) == []


def test_a_release_leaves_no_work_folder_made_or_refused(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    key = str(tmp_path / "op.pem")
    assert _ppmid(tmp, "release", "--make-key", key).returncode == 0
    p = _ppmid(tmp, "release", "--board", "emulated", "--key", key, "--out", str(tmp_path / "rel"))
    assert p.returncode == 0 and (tmp_path / "rel" / "offer.json").exists(), p.stderr
    assert _left_in(tmp) == []
    # a tree that does not compile: refused after its copy and part of its build in the work folder
    broken = tmp_path / "firmware"
    import shutil
    shutil.copytree(FIRMWARE_DIR, broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "ppmid" / "app.py").write_text("def broken(:\n")
    p = _ppmid(tmp, "release", "--board", "emulated", "--key", key, "--out", str(tmp_path / "rel2"),
               "--firmware-dir", str(broken))
    assert p.returncode == 1 and "app.py" in p.stderr, p.stderr
    assert _left_in(tmp) == []


def test_a_dry_run_deploy_keeps_one_build_folder_per_board_by_design(tmp_path):
    # --dry-run prints commands that must stay runnable, so its build stays, in a fixed
    # place per board ($TMPDIR/ppmid-build-NAME, docs/platform.md): a second run reuses it
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for _ in range(2):
        p = _ppmid(tmp, "deploy", "--dry-run", "--port", str(tmp_path / "ttyUSB0"), "--board", "esp32s3-devkitc-1-n8r8")
        assert p.returncode == 0, p.stderr
        assert _left_in(tmp) == ["ppmid-build-esp32s3-devkitc-1-n8r8"]
