"""`ppmid deploy`'s install cut short on the emulated board (firmware/install.py,
docs/platform.md `ppmid deploy` step 4): the board finishes it at its next boot, before
anything imports ppmid, and the deploy, probing again, finds every file's hash right and
says so; a cut before the new boot.py is in place leaves the old set and the deploy goes
on; a staging dir without the marker is left alone at boot; a marker that cannot be read or
a staged file gone is refused at boot with a logged reason, and the old set runs.

The cut: the host's install script prints a line after each rename (its `_step`); the test
sends the same script with a `_step` that, after k renames, arms the emulated watchdog for
1 ms and waits (a watchdog reset, as the app's own would do)."""
import os

import pytest

from host_tools import board_scripts, boards, deploy
from host_tools.emuboard import EmulatedBoard
from tests.conftest import changed_firmware_copy

STAGE = deploy.STAGING

# after K renames: the watchdog strikes (the supervisor kills the chip and boots it again)
CUT = """
_renamed = [0]


def _step(path):
    print('@@R', path)
    _renamed[0] += 1
    if _renamed[0] == %d:
        import time
        hw = sys.modules['_emuboard']
        hw.ctl.write(b'W1\\n')
        while True:
            time.sleep(1)
"""

# between the marker and the first rename, with (what) done to the staging dir first
CUT_BEFORE_RENAMES = """
def _install(build, new, all_files, package):
    import time
    sys.path.insert(0, STAGE)
    import install
    sys.path.pop(0)
    install.begin('', build, new, all_files, package)
    %s
    sys.modules['_emuboard'].ctl.write(b'W1\\n')
    while True:
        time.sleep(1)
"""


@pytest.fixture
def cut_install(monkeypatch):
    """cut_install(code): the deploy's first install script gets `code` put before its call;
    later ones (the deploy's next attempt) are sent as they are."""
    original = board_scripts.with_call
    cuts = []

    def with_call(name, function, *args):
        text = original(name, function, *args)
        if name == "deploy_install.py" and cuts:
            call = "\n%s(" % function
            at = text.rindex(call)
            text = text[:at] + "\n" + cuts.pop(0) + text[at:]
        return text
    monkeypatch.setattr(board_scripts, "with_call", with_call)
    # a silent install has lost its board: a few seconds of silence say so here
    monkeypatch.setattr(deploy, "STALL_S", 4)
    return cuts.append


def _firmware(tmp_path, name, tag, old_boot=False, extra=()):
    """A copy of firmware/ in which every file says `tag` (so each deploy changes them
    all) and the version is TAG.x.y; old_boot: boot.py as it was before the install
    finished itself (no marker check); extra: more never-imported modules."""
    fw = changed_firmware_copy(tmp_path / name, tag)
    if old_boot:
        # (the unix port has no alloc_emergency_exception_buf: guarded as boot.py guards it,
        # since a boot.py that raises skips main.py, on the ESP32 and the emulated board)
        (fw / "boot.py").write_text("# boot.py before the install finished itself (%s)\nimport micropython\n"
                                    "try:\n    micropython.alloc_emergency_exception_buf(100)\n"
                                    "except AttributeError:\n    pass\n" % tag)
    for mod in extra:
        (fw / "ppmid" / mod).write_text("X = %r\n" % tag)
    return fw


def _local(tmp_path, fw, name):
    out, files, _ = deploy.build("emulated", str(fw), str(tmp_path / name))
    return {f: deploy.sha256_file(os.path.join(out, f)) for f in files}


def assert_no_app_before_the_finish(console):
    """No ready banner of any version between the cut and the boot's finish line (the
    console from the deploy on): the finish came before anything imported ppmid."""
    cut = console.index("reboot: watchdog")
    before = console[cut:console.index("PPMID install: build", cut)]
    assert "PPMID ready" not in before and "version=" not in before, before[-2000:]


def _listing(b):
    return b.exec("import os\nprint('@@LS', sorted(os.listdir('/')), sorted(os.listdir('/ppmid')))")


# where the install is cut: after the installer and boot.py (the whole package still
# staged), half-way (a package part new, part staged), after the last rename (nothing
# staged; the old package's leftovers and the staging dir still there). make test runs
# the two ends, which between them finish a package wholly staged beside renamed files and
# clean up after one wholly renamed (~15 s each); half-way, in make soak, repeats both
CUTS = [pytest.param("after-boot.py", id="after-boot.py"), pytest.param("half-way", id="half-way", marks=pytest.mark.slow),
        pytest.param("after-the-last", id="after-the-last")]


@pytest.mark.parametrize("where", CUTS)
def test_an_install_cut_after_k_renames_is_finished_by_the_board_at_boot(tmp_path, cut_install, where):
    fw1 = _firmware(tmp_path, "fw1", "1", extra=["zz_old_only.py"])
    fw2 = _firmware(tmp_path, "fw2", "2")
    local1, local2 = _local(tmp_path, fw1, "l1"), _local(tmp_path, fw2, "l2")
    n = len(local2)  # every file changes but board.json (made from the same definition)
    changed = [f for f in local2 if local1.get(f) != local2[f]]
    order = deploy._install_order(changed)
    assert order[:2] == ["install.mpy", "boot.py"] and order[-1] == "main.py"
    k = {"after-boot.py": 2, "half-way": len(order) // 2, "after-the-last": len(order)}[where]
    with EmulatedBoard(tmp_path / "board") as b:
        assert b.deploy(firmware_dir=str(fw1)).group(1).decode().startswith("1.")
        mark = b.mark()
        cut_install(CUT % k)
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append)
        b.wait_for(r"reboot: watchdog", since=mark)
        b.wait_for(r"PPMID install: build %s finished at boot: %d of %d files were still staged"
                   % (deploy.build_id(local2), len(order) - k, len(order)), since=mark)
        # then a soft reset: the app starts on a heap the install never used
        b.wait_for(r"reboot: soft_reset")
        assert b.wait_ready().group(1).decode().startswith("2."), k
        assert any(s.startswith("board lost (install on ") for s in said), said
        assert ("the install is complete on the board (one cut short is finished at boot): "
                "all %d files have the build's hash" % n) in said, said
        assert deploy.board_hashes(b.repl, sorted(local2), "") == local2
        out = _listing(b)
        assert STAGE[1:] not in out and "zz_old_only" not in out, out
        # the install at boot ran before anything imported ppmid: nothing of the old
        # package was loaded (an app of either set would have said it was ready first)
        assert_no_app_before_the_finish(b.console_text()[mark:])


def test_a_cut_before_the_new_boot_py_keeps_the_old_set_and_the_deploy_goes_on(tmp_path, cut_install):
    # the board's boot.py predates the marker check: a cut after the installer's rename
    # and before boot.py's boots the old boot.py, main.py and package, whole (the new
    # install.mpy beside them is not imported by anything old); the deploy's next attempt
    # installs the rest from what is staged
    fw1 = _firmware(tmp_path, "fw1", "1", old_boot=True)
    fw2 = _firmware(tmp_path, "fw2", "2")
    local2 = _local(tmp_path, fw2, "l2")
    with EmulatedBoard(tmp_path / "board") as b:
        b.deploy(firmware_dir=str(fw1))
        b.exec("import os; os.remove('/install.mpy')")  # and no installer at all: the board before this work
        mark = b.mark()
        cut_install(CUT % 1)
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append)
        first = b.wait_ready(since=mark)
        assert first.group(1).decode().startswith("1."), "the old set, whole, after the cut"
        assert "PPMID install" not in b.console_text()[mark:first.start()]
        assert any(s.startswith("board lost (install on ") for s in said), said
        assert any(s.startswith("resumed: ") for s in said), said
        assert b.wait_ready().group(1).decode().startswith("2.")
        assert deploy.board_hashes(b.repl, sorted(local2), "") == local2
        assert STAGE[1:] not in _listing(b)


def test_a_staging_dir_without_the_marker_is_left_alone_at_boot(tmp_path, deployed_board):
    fw2 = _firmware(tmp_path, "fw2", "2")
    local2 = _local(tmp_path, fw2, "l2")
    src = tmp_path / "l2"
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed: its app runs
        old = b.wait_ready(60, since=0).group(1).decode()
        installed = deploy.board_hashes(b.repl, sorted(local2), "")
        # a copy in progress (or cut short), with a marker that was being written when the
        # power went (.install.tmp: only a whole marker is renamed to .install)
        b.exec("import os\nfor d in ('/.deploy-new', '/.deploy-new/ppmid'): os.mkdir(d)\n"
               "with open('/.deploy-new/.build', 'w') as f: f.write(%r)\n"
               "with open('/.deploy-new/.install.tmp', 'w') as f: f.write('ppmid-install 1 x\\nr ')"
               % deploy.build_id(local2))
        boards.mpremote(b.repl, ["fs", "cp", str(src / "boot.py"), str(src / "install.mpy"), ":/.deploy-new/", "+",
                                 "fs", "cp", str(src / "ppmid" / "app.mpy"), ":/.deploy-new/ppmid/"])
        look = "import os\nprint(sorted(os.listdir('/.deploy-new')), os.listdir('/.deploy-new/ppmid'))"
        staged = b.exec(look)
        mark = b.mark()
        b.reset()
        assert b.wait_ready(since=mark).group(1).decode() == old
        assert "PPMID install" not in b.console_text()[mark:]
        assert deploy.board_hashes(b.repl, sorted(local2), "") == installed
        assert b.exec(look) == staged
        # and the deploy of that build resumes from it
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append, reset=False)
        changed = [f for f in local2 if installed[f] != local2[f]]
        assert "resumed: 3 of %d files already staged" % len(changed) in said, said
        assert deploy.board_hashes(b.repl, sorted(local2), "") == local2


@pytest.mark.parametrize("damage,code,why", [
    ("os.remove('/.deploy-new/ppmid/app.mpy')", "E_INSTALL_MISSING",
     "ppmid/app.mpy is neither staged in /.deploy-new nor installed with the build's SHA-256"),
    ("with open('/.deploy-new/.install', 'w') as f: f.write('ppmid-install 1 0123\\nr zz')", "E_INSTALL_MARKER",
     "the install marker /.deploy-new/.install is not one this firmware wrote whole"),
])
def test_a_bad_marker_or_a_staged_file_gone_is_refused_at_boot_and_the_old_set_runs(tmp_path, cut_install,
                                                                                    deployed_board, damage, code, why):
    fw2 = _firmware(tmp_path, "fw2", "2")
    local2 = _local(tmp_path, fw2, "l2")
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed: its app runs
        old = b.wait_ready(60, since=0).group(1).decode()
        installed = deploy.board_hashes(b.repl, sorted(local2), "")
        mark = b.mark()
        # the install cut between its marker and its first rename, after which the
        # staging dir was damaged (flash trouble, a hand at the REPL)
        cut_install(CUT_BEFORE_RENAMES % damage)
        said = []
        with pytest.raises(deploy.DeployError, match="did not complete in 1 attempts") as err:
            deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append, attempts=1)
        # the build changes boot.py (the second rename): the give-up message says so
        assert "the board finishes it at its next boot if its boot.py checks for the install's marker, as this " \
               "build's does once renamed (rename 2 of " in str(err.value), err.value
        refusal = b.wait_for(r"PPMID install: not finished \(%s\): [^\n]*" % code, since=mark).group(0).decode()
        assert why in refusal and "nothing renamed, the files in place run" in refusal, refusal
        # no crash loop: the old set boots once and runs, untouched
        ready = b.wait_ready(since=mark)
        assert ready.group(1).decode() == old
        restarts = b.restarts
        assert deploy.board_hashes(b.repl, sorted(local2), "") == installed
        assert b.restarts == restarts
        # the next deploy stages what is missing and installs the build
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append)
        assert b.wait_ready().group(1).decode().startswith("2.")
        assert deploy.board_hashes(b.repl, sorted(local2), "") == local2
        assert STAGE[1:] not in _listing(b)


def test_an_install_that_fails_on_the_board_stops_the_deploy_and_the_board_boots_no_mix(tmp_path, deployed_board):
    # a flash error in a rename (here a folder, not empty, where the new build's
    # ppmid/app.mpy goes: LittleFS refuses the rename with an OSError) is the board's
    # answer, not a lost board: the deploy stops at once with E_INSTALL_FLASH, what failed
    # and which files are new; the marker stays, and the boots that follow try the install
    # again and, while it fails, do not start the app on a mix of the two builds
    fw2 = _firmware(tmp_path, "fw2", "2")
    local2 = _local(tmp_path, fw2, "l2")
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed: its app runs
        b.wait_ready(60, since=0)
        b.exec("import os\nos.remove('/ppmid/app.mpy')\nos.mkdir('/ppmid/app.mpy')\n"
               "with open('/ppmid/app.mpy/x', 'w') as f: f.write('in the way')")
        said = []
        with pytest.raises(deploy.DeployError) as err:
            deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append, attempts=3)
        msg = str(err.value)
        assert err.value.code == "E_INSTALL_FLASH"
        assert "failed on the board (E_INSTALL_FLASH: OSError(" in msg, msg
        assert "files to install are new (install.mpy, boot.py, " in msg and "stops before main.py" in msg, msg
        assert "Traceback" not in msg and "board reset" not in msg, msg
        assert not any(s.startswith("board lost") for s in said), said  # not retried
        mark = b.mark()
        b.reset()
        stop = b.wait_for(r"PPMID install: not finished \(E_INSTALL_FLASH\): [^\n]*", since=mark).group(0).decode()
        assert "the app is not started" in stop, stop
        b.wait_for(r"Stopped: E_INSTALL_FLASH", since=mark)
        with pytest.raises(Exception):
            b.wait_ready(since=mark, timeout=5)
        assert "PPMID" not in b.console_text()[mark:].replace(stop, ""), "nothing of either set ran"
        # the folder removed, the same deploy resumes from what is staged and completes
        b.exec("import os\nos.remove('/ppmid/app.mpy/x')\nos.rmdir('/ppmid/app.mpy')")
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append)
        assert any(s.startswith("resumed: ") for s in said), said
        assert b.wait_ready().group(1).decode().startswith("2.")
        assert deploy.board_hashes(b.repl, sorted(local2), "") == local2
        assert STAGE[1:] not in _listing(b)


POINTER = "import json\nprint('@@PTR', json.dumps(json.load(open('/upd/state.json'))))"


def test_a_deploy_during_an_image_updates_probation_is_refused_with_nothing_copied(tmp_path, deployed_board):
    # the first boot of a new image, not confirmed yet (the pointer ppmid.update.slots'
    # switch_image writes): a deploy would drop the probation (install.forget_updates), so
    # the image would never be marked valid and the next reset would boot the previous one
    fw2 = _firmware(tmp_path, "fw2", "2")
    local2 = _local(tmp_path, fw2, "l2")
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed: its app runs
        b.wait_ready(60, since=0)
        b.exec("import os\ntry:\n os.mkdir('/upd')\nexcept OSError:\n pass\nfrom ppmid.update import slots\n"
               "slots.switch_image('', 'ota_1', '1.1.0', '1.0.0', 'offer-1', 300, 1796634561)")
        pointer = b.exec(POINTER)
        assert '"image": "ota_1"' in pointer, pointer
        installed = deploy.board_hashes(b.repl, sorted(local2), "")
        said = []
        with pytest.raises(deploy.DeployError) as err:
            deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append)
        assert err.value.code == "E_DEPLOY_PROBATION", err.value
        msg = str(err.value)
        assert "runs firmware image ota_1 on probation (E_DEPLOY_PROBATION: " in msg, msg
        assert "nothing was copied" in msg, msg
        assert "reset the board" in msg, msg
        assert STAGE[1:] not in _listing(b)
        assert deploy.board_hashes(b.repl, sorted(local2), "") == installed
        assert b.exec(POINTER) == pointer  # the probation kept for the bootloader's verdict
        # once the update has its result (the app confirms the image: the pointer's
        # probation ends), the deploy goes through
        b.exec("from ppmid.update import slots\nslots.confirm('', '1.1.0')")
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append)
        assert b.wait_ready().group(1).decode().startswith("2.")
        assert deploy.board_hashes(b.repl, sorted(local2), "") == local2


def test_giving_up_on_a_cut_install_of_app_code_says_that_the_boards_boot_py_finishes_it(tmp_path, cut_install):
    # a build that changes neither install.mpy nor boot.py (app code only, the common
    # second deploy): every cut is finished at boot, by the board's boot.py, and the
    # deploy that runs out of attempts says so
    fw2 = _firmware(tmp_path, "fw2", "2")
    fw3 = _firmware(tmp_path, "fw3", "2", extra=["zz_new.py"])
    local3 = _local(tmp_path, fw3, "l3")
    with EmulatedBoard(tmp_path / "board") as b:
        b.deploy(firmware_dir=str(fw2))
        mark = b.mark()
        cut_install(CUT % 1)
        with pytest.raises(deploy.DeployError, match="did not complete in 1 attempts") as err:
            deploy.deploy(b.repl, "emulated", firmware_dir=str(fw3), attempts=1)
        msg = str(err.value)
        assert ("the install was cut short: the board's boot.py, already this build's, finishes it at its next "
                "boot, before anything imports ppmid") in msg, msg
        assert "install.mpy" not in msg and "else the old files stay" not in msg, msg
        b.wait_for(r"PPMID install: build %s finished at boot: 0 of 1 files were still staged"
                   % deploy.build_id(local3), since=mark)
        b.wait_ready(since=mark)
        assert deploy.board_hashes(b.repl, sorted(local3), "") == local3


def test_an_install_script_that_raises_on_the_board_is_said_once_not_retried(tmp_path, cut_install, deployed_board):
    # any exception the install script does not turn into an @@ line (here one raised
    # before its call) ends mpremote with the board's traceback: not a lost board
    fw2 = _firmware(tmp_path, "fw2", "2")
    with deployed_board(tmp_path / "board") as b:   # firmware/ deployed: its app runs
        b.wait_ready(60, since=0)
        cut_install("raise MemoryError('test: the board ran out of heap')")
        said = []
        with pytest.raises(deploy.BoardScriptFailed) as failed:
            deploy.deploy(b.repl, "emulated", firmware_dir=str(fw2), log=said.append)
        assert ("install on %s: the board's script raised MemoryError: test: the board ran out of heap "
                "(the board did not reset; not retried)" % b.repl) == str(failed.value), failed.value
        assert not any(s.startswith("board lost") for s in said), said
