# The deploy's install as the board runs it (firmware/install.py): a marker before the first
# rename, so that an install cut after any number of renames is finished by the next boot;
# a marker that cannot be read or a file neither staged nor installed is refused with
# nothing changed; the application update dropped but its replay floors kept; a flash
# error or Ctrl-Cs in the boot's finish: the old set boots when nothing was renamed, else
# install.Stopped (no mix starts), the marker kept for the next boot. On a real LittleFS
# under MicroPython (test_relay_support.fresh_root), and on CPython.
import binascii
import hashlib
import json
import os
import sys

import install
from test_relay_support import fresh_root, read_file, write_file

STAGE = install.STAGE


def _sha(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def _mkdir(p):
    try:
        os.mkdir(p)
    except OSError:
        pass


def _tree(root, rel=""):
    """{path: bytes} of every file under root (the folders are implied)."""
    out = {}
    for name, isdir in install._entries(root + rel):
        if isdir:
            out.update(_tree(root, rel + "/" + name))
        else:
            out[(rel + "/" + name)[1:]] = read_file(root + rel + "/" + name)
    return out


OLD = {"boot.py": b"# old boot\n", "main.py": b"# old main\n", "board.json": b"{}",
       "ppmid/__init__.mpy": b"old init", "ppmid/app.mpy": b"old app", "ppmid/zigbee/ash.mpy": b"old ash",
       "ppmid/gone.mpy": b"only the old build has this", "ppmid/old/only.mpy": b"a folder the new build drops",
       "keep.txt": b"not the deploy's: left alone"}
NEW = {"install.mpy": b"new installer", "boot.py": b"# new boot\n", "main.py": b"# new main, longer\n",
       "board.json": b"{}", "ppmid/__init__.mpy": b"new init", "ppmid/app.mpy": b"new app",
       "ppmid/zigbee/ash.mpy": b"new ash", "ppmid/zigbee/ezsp.mpy": b"a module the old build lacks"}
# the order host_tools/deploy.py installs them in: the installer and boot.py first
ORDER = ["install.mpy", "boot.py", "ppmid/__init__.mpy", "ppmid/app.mpy", "ppmid/zigbee/ash.mpy",
         "ppmid/zigbee/ezsp.mpy", "main.py"]  # board.json unchanged: not staged


def _board():
    """A board with the old build installed and the new one staged and verified."""
    root = fresh_root(256)
    for path, data in OLD.items():
        d = root
        for part in path.split("/")[:-1]:
            d += "/" + part
            _mkdir(d)
        write_file(root + "/" + path, data)
    _mkdir(root + STAGE)
    write_file(root + STAGE + "/" + install.BUILD, b"0123456789abcdef")
    for path in ORDER:
        d = root + STAGE
        for part in path.split("/")[:-1]:
            d += "/" + part
            _mkdir(d)
        write_file(root + STAGE + "/" + path, NEW[path])
    return root


def _begin(root):
    install.begin(root, "0123456789abcdef", [[p, _sha(NEW[p])] for p in ORDER], sorted(NEW))


def _installed(root):
    want = dict(NEW)
    want["keep.txt"] = OLD["keep.txt"]
    return want


class _Cut(Exception):
    pass


def _cut_after(k):
    done = []

    def step(path):
        done.append(path)
        if len(done) == k:
            raise _Cut()  # the power goes: nothing after this rename happens
    return step, done


def test_a_whole_install_renames_deletes_the_leftovers_and_removes_the_staging_dir():
    root = _board()
    _begin(root)
    step, done = _cut_after(0)
    assert install.finish(root, step) == ("0123456789abcdef", len(ORDER), len(ORDER))
    assert done == ORDER  # in the host's order
    assert _tree(root) == _installed(root)
    assert not install._exists(root + "/ppmid/old") and not install._exists(root + STAGE)


def test_an_install_cut_after_any_number_of_renames_is_finished_at_boot():
    for k in range(1, len(ORDER) + 1):
        root = _board()
        _begin(root)
        step, done = _cut_after(k)
        try:
            install.finish(root, step)
            raise AssertionError("not cut")
        except _Cut:
            pass
        assert done == ORDER[:k]
        said = []
        assert install.run(root, said.append), said
        assert said == ["PPMID install: build 0123456789abcdef finished at boot: %d of %d files were still staged"
                        % (len(ORDER) - k, len(ORDER))], said
        assert _tree(root) == _installed(root), k
        assert not install._exists(root + STAGE)


def test_a_cut_during_the_boots_own_finish_is_finished_by_the_next_boot():
    root = _board()
    _begin(root)
    step, _ = _cut_after(2)
    try:
        install.finish(root, step)
    except _Cut:
        pass
    step, _ = _cut_after(3)  # the first boot's finish is cut too
    try:
        install.finish(root, step)
    except _Cut:
        pass
    assert install.run(root, lambda m: None)
    assert _tree(root) == _installed(root)


def _refused(root, code):
    said = []
    before = _tree(root)
    assert install.run(root, said.append) is False
    assert len(said) == 1 and said[0].startswith("PPMID install: not finished (%s): " % code), said
    assert "nothing renamed, the files in place run" in said[0]
    assert _tree(root) == before  # nothing renamed, deleted or removed
    return said[0]


def test_a_marker_that_cannot_be_read_is_refused_and_changes_nothing():
    marker = STAGE + "/" + install.MARKER
    for text in (b"", b"ppmid-install 1 0123\nr 00 ppmid/app.mpy\nend\n",    # a digest that is no SHA-256
                 b"ppmid-install 1 0123\nr %s ppmid/app.mpy\n" % _sha(b"x").encode(),  # no end: not whole
                 b"ppmid-install 9 0123\nend\n",                               # a format this code does not know
                 b"ppmid-install 1 0123\nend\nd ppmid/app.mpy\n",              # lines after the end
                 b"\xff\xfe\x00garbage\n"):
        root = _board()
        write_file(root + marker, text)
        said = _refused(root, install.E_INSTALL_MARKER)
        assert ("install marker %s" % marker) in said
    # no marker at all: refused the same way (boot.py calls run() only when there is one)
    root = _board()
    _refused(root, install.E_INSTALL_MARKER)


def test_a_staged_file_gone_is_refused_before_anything_is_renamed():
    # before the first rename: the old set stays whole
    root = _board()
    _begin(root)
    os.remove(root + STAGE + "/ppmid/app.mpy")
    said = _refused(root, install.E_INSTALL_MISSING)
    assert "ppmid/app.mpy is neither staged in %s nor installed with the build's SHA-256" % STAGE in said
    assert read_file(root + "/ppmid/app.mpy") == b"old app" and read_file(root + "/boot.py") == b"# old boot\n"
    # after renames: the last file of the list gone from the staging dir (its old copy is
    # in place, of another hash) is told from one already renamed
    root = _board()
    _begin(root)
    step, _ = _cut_after(3)
    try:
        install.finish(root, step)
    except _Cut:
        pass
    os.remove(root + STAGE + "/main.py")
    # three files are new: a mix, which must not start (the next deploy completes it)
    before = _tree(root)
    said = []
    try:
        install.run(root, said.append)
        raise AssertionError("went on")
    except install.Stopped as e:
        assert e.args == (install.E_INSTALL_MISSING,)
    assert len(said) == 1 and said[0].startswith("PPMID install: not finished (E_INSTALL_MISSING): main.py is "
                                                 "neither staged"), said
    assert said[0].endswith("some files are new, some old: the app is not started (a mix of two builds); "
                            "run the deploy again"), said
    assert _tree(root) == before


def _pointer(root):
    return json.loads(read_file(root + "/upd/state.json"))


def test_the_application_update_is_dropped_and_its_replay_floors_kept():
    root = _board()
    _mkdir(root + "/upd")
    for slot in ("a", "b"):
        _mkdir(root + "/upd/" + slot)
        _mkdir(root + "/upd/" + slot + "/ppmid")
        write_file(root + "/upd/" + slot + "/ppmid/app.mpy", b"an update's app")
    write_file(root + "/upd/state.json", json.dumps(
        {"slot": "a", "version": "0.3.0", "seq": 1767225600, "image_seq": 1767225000,
         "probation": {"boots": 1, "max_boots": 3, "seconds": 300}, "previous": {"slot": "", "version": "0.1.0"},
         "image": {"label": "ota_1", "version": "0.3.0"}}).encode())
    write_file(root + "/upd/stage.json", b'{"slot": "b"}')
    write_file(root + "/upd/boots", b"2")
    _begin(root)
    install.finish(root)
    assert _pointer(root) == {"slot": "", "seq": 1767225600, "image_seq": 1767225000}
    assert sorted(n for n, _ in install._entries(root + "/upd")) == ["state.json"]
    # one floor only, and a pointer without floors or unreadable: nothing of /upd stays
    for st, kept in (({"slot": "b", "seq": 7}, {"slot": "", "seq": 7}),
                     ({"slot": "b"}, None), ({"slot": "", "seq": True, "image_seq": "9"}, None), (b"{not json", None)):
        root = _board()
        _mkdir(root + "/upd")
        write_file(root + "/upd/state.json", st if isinstance(st, bytes) else json.dumps(st).encode())
        _mkdir(root + "/upd/b")
        install.forget_updates(root)
        if kept is None:
            assert not install._exists(root + "/upd"), st
        else:
            assert _pointer(root) == kept and not install._exists(root + "/upd/b")


def _in_the_way(root, path):
    # a folder that is not empty where a staged file goes (no deploy makes one): the flash
    # refuses that rename with an OSError, as it would any rename on a failing flash
    _remove_if(root + "/" + path)
    _mkdir(root + "/" + path)
    write_file(root + "/" + path + "/x", b"in the way")


def _out_of_the_way(root, path):
    os.remove(root + "/" + path + "/x")
    os.rmdir(root + "/" + path)


def _remove_if(p):
    try:
        os.remove(p)
    except OSError:
        pass


def test_a_rename_the_flash_refuses_after_others_stops_the_boot_and_the_next_boot_tries_again():
    # ppmid/app.mpy is the fourth rename: three files are new when it fails, a mix of the
    # two builds that must not start; the marker stays and the next boot finishes
    root = _board()
    _begin(root)
    _in_the_way(root, "ppmid/app.mpy")
    said = []
    try:
        install.run(root, said.append)
        raise AssertionError("went on")
    except install.Stopped as e:
        assert e.args == (install.E_INSTALL_FLASH,)
    assert len(said) == 1 and said[0].startswith("PPMID install: not finished (E_INSTALL_FLASH): "), said
    assert "some files are new, some old: the app is not started" in said[0]
    assert "the next boot tries again" in said[0]
    assert install._exists(root + STAGE + "/" + install.MARKER)
    assert read_file(root + "/boot.py") == NEW["boot.py"] and read_file(root + "/main.py") == OLD["main.py"]
    _out_of_the_way(root, "ppmid/app.mpy")
    said = []
    assert install.run(root, said.append) is True
    assert said == ["PPMID install: build 0123456789abcdef finished at boot: 4 of 7 files were still staged"], said
    assert _tree(root) == _installed(root)


def test_a_first_rename_the_flash_refuses_boots_the_old_set_whole_and_the_next_boot_tries_again():
    root = _board()
    _begin(root)
    _in_the_way(root, "install.mpy")
    before = _tree(root)
    said = []
    assert install.run(root, said.append) is False
    assert len(said) == 1 and said[0].startswith("PPMID install: not finished (E_INSTALL_FLASH): "), said
    assert "nothing renamed, the files in place run; the next boot tries again" in said[0]
    assert _tree(root) == before
    _out_of_the_way(root, "install.mpy")
    assert install.run(root, said.append) is True
    assert _tree(root) == _installed(root)


class _Os:
    """install.py's `os` with one call replaced (MicroPython's os module is read-only)."""
    def __init__(self, **calls):
        for name, call in calls.items():
            setattr(self, name, call)

    def __getattr__(self, name):
        return getattr(os, name)


def _run_with(root, **calls):
    install.os = _Os(**calls)
    said = []
    try:
        return install.run(root, said.append), said
    except install.Stopped as e:
        return e, said
    finally:
        install.os = os


def test_a_ctrl_c_during_the_finish_starts_it_over():
    # where Ctrl-C cannot be held off (kbd_intr), each one lands in a rename: the finish
    # starts over and completes
    root = _board()
    _begin(root)
    n = [0]

    def rename(a, b):
        n[0] += 1
        if n[0] in (2, 5):
            raise KeyboardInterrupt
        os.rename(a, b)
    done, said = _run_with(root, rename=rename)
    assert done is True, said
    assert said == ["PPMID install: build 0123456789abcdef finished at boot: 7 of 7 files were still staged"], said
    assert _tree(root) == _installed(root) and not install._exists(root + STAGE)


def test_five_ctrl_cs_in_the_finish_are_said_and_stop_the_boot_before_a_mix():
    root = _board()
    _begin(root)
    n = [0]

    def rename(a, b):
        n[0] += 1
        if n[0] % 2 == 0:  # one rename gets through each time, the next is interrupted
            raise KeyboardInterrupt
        os.rename(a, b)
    stopped, said = _run_with(root, rename=rename)
    assert isinstance(stopped, install.Stopped) and stopped.args == (install.E_INSTALL_INTERRUPTED,), stopped
    assert len(said) == 1 and said[0].startswith("PPMID install: not finished (E_INSTALL_INTERRUPTED): "
                                                 "interrupted 5 times; some files are new"), said
    assert install._exists(root + STAGE + "/" + install.MARKER)
    # the next boot, quiet, finishes
    assert install.run(root, said.append) is True
    assert _tree(root) == _installed(root)


def test_a_ctrl_c_after_the_marker_is_removed_is_a_finished_install():
    # the marker goes last but for the staging dir itself: a Ctrl-C there (or in the
    # success line) must not be told as an unreadable marker, and boot.py must soft-reset
    root = _board()
    _begin(root)
    hit = []

    def rmdir(p):
        if p == root + STAGE and not hit and not install._exists(p + "/" + install.MARKER):
            hit.append(p)
            raise KeyboardInterrupt
        os.rmdir(p)
    done, said = _run_with(root, rmdir=rmdir)
    assert hit and done is True, (hit, said)
    assert said == ["PPMID install: build 0123456789abcdef finished at boot: 7 of 7 files were still staged"], said
    assert _tree(root) == _installed(root) and not install._exists(root + STAGE)


def test_ctrl_c_is_held_off_for_the_whole_finish_and_given_back_after():
    # on the board, micropython.kbd_intr(-1) keeps Ctrl-C from being delivered during the
    # finish, and kbd_intr(3) gives it back however run() ends (finished, boot on, stopped).
    # MicroPython's own module cannot be watched (read-only): CPython's stand-in is
    if sys.implementation.name == "micropython":
        class SkipTest(Exception):
            pass
        raise SkipTest("its micropython module is read-only: kbd_intr is watched in the CPython run")
    mp = sys.modules["micropython"]
    calls = []

    def kbd_intr(c):
        calls.append(("kbd_intr", c))
    mp.kbd_intr = kbd_intr
    try:
        def rename(a, b):
            calls.append(("rename", b[len(root):]))
            os.rename(a, b)
        root = _board()
        _begin(root)
        assert _run_with(root, rename=rename)[0] is True
        assert calls[0] == ("kbd_intr", -1) and calls[-1] == ("kbd_intr", 3), calls
        assert [c for c in calls if c[0] == "rename"] == [("rename", "/" + p) for p in ORDER]
        root = _board()
        _begin(root)
        _in_the_way(root, "ppmid/app.mpy")
        del calls[:]
        assert isinstance(_run_with(root)[0], install.Stopped)
        assert calls == [("kbd_intr", -1), ("kbd_intr", 3)], calls
    finally:
        del mp.kbd_intr
