# install: the last step of `ppmid deploy`, which a board finishes by itself when a reset
# cut it short (docs/platform.md `ppmid deploy`, step 4).
#
# The deploy stages every changed file in STAGE and checks its SHA-256; the install then
# renames each over its final name. Each rename is atomic on LittleFS, the set of them is
# not: a reset half-way through would boot some new and some old modules, a mix never
# tested, with maybe no host there to run the deploy again. So before the first rename the
# install writes a marker in STAGE (MARKER: the build, the files to rename in order with
# their SHA-256, the old package's files to delete), and boot.py, finding it, calls
# run() before anything imports ppmid: the staged files still there are what is left
# to rename. Only os, hashlib, binascii, json (and micropython's kbd_intr) here: it runs while
# /ppmid may be half new.
# Deployed as /install.mpy beside boot.py (host_tools/deploy.py, which installs it first and
# boot.py second, so that any later cut is finished at boot); the host's install step
# (host_tools/board_scripts/deploy_install.py) runs the same code through begin() and finish().
import binascii
import hashlib
import json
import os

STAGE = "/.deploy-new"    # = host_tools/deploy.py STAGING
MARKER = ".install"       # in STAGE; written whole (a new file renamed into place)
BUILD = ".build"          # in STAGE: the staged build's id (host_tools/board_scripts/deploy_probe.py)
FORMAT = "ppmid-install 1"
UPDATES = "/upd"          # = ppmid.update.slots.DIR
POINTER = "state.json"    # = ppmid.update.slots.STATE's name
FLOORS = ("seq", "image_seq")  # the pointer's replay floors (docs/update.md "Replay")

E_INSTALL_MARKER = "E_INSTALL_MARKER"    # the marker cannot be read: nothing is renamed
E_INSTALL_MISSING = "E_INSTALL_MISSING"  # a file is neither staged nor installed: nothing is renamed
# at boot only (run()), with the marker kept for the next boot: a flash error in the finish
# (OSError), and a finish interrupted 5 times where Ctrl-C cannot be held off
E_INSTALL_FLASH = "E_INSTALL_FLASH"
E_INSTALL_INTERRUPTED = "E_INSTALL_INTERRUPTED"


class Refused(Exception):
    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message


class Stopped(Exception):
    """run() could not finish an install that had begun: raised out of boot.py, so that
    the board does not run main.py (the ESP32 port skips main.py when boot.py fails and
    stays at the REPL; the emulated board's ROM does the same)."""


def _entries(d):
    # (name, is a directory) of folder d; CPython (the tests) has no ilistdir
    if hasattr(os, "ilistdir"):
        return [(e[0], e[1] == 0x4000) for e in os.ilistdir(d)]
    return [(n, os.path.isdir(d + "/" + n)) for n in os.listdir(d)]


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _remove(p):
    try:
        os.remove(p)
    except OSError:
        pass


def _rmtree(d, keep=None):
    # everything under d but the file `keep` (a name in d itself); d too when it ends empty
    try:
        entries = _entries(d)
    except OSError:
        return
    for name, isdir in entries:
        if isdir:
            _rmtree(d + "/" + name)
        elif name != keep:
            _remove(d + "/" + name)
    try:
        os.rmdir(d)
    except OSError:
        pass


def _files(d, rel, out):
    # every file under folder d, as paths relative to the root (rel: d's)
    for name, isdir in _entries(d):
        if isdir:
            _files(d + "/" + name, rel + name + "/", out)
        else:
            out.append(rel + name)
    return out


def _mkdirs(root, path):
    d = root
    for part in path.split("/")[:-1]:
        d += "/" + part
        try:
            os.mkdir(d)
        except OSError:
            pass  # there already


def _sha256(p):
    h = hashlib.sha256()
    b = bytearray(512)
    with open(p, "rb") as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(b[:n] if n < 512 else b)
    return binascii.hexlify(h.digest()).decode()


def begin(root, build, new, all_files, package="ppmid"):
    """Write the marker (host side, once every staged file is verified): `new` = [[path,
    sha256]] in the order to rename them; the files of the old package that the build
    (`all_files`) does not have are listed for deletion now, while /package is all old."""
    keep = set(all_files)
    try:
        old = _files(root + "/" + package, package + "/", [])
    except OSError:
        old = []  # no package yet (a blank board, or a frozen one)
    stage = root + STAGE
    try:
        os.mkdir(stage)
    except OSError:
        pass  # the staging dir of this build (a deploy with nothing to copy has none)
    tmp = stage + "/" + MARKER + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s %s\n" % (FORMAT, build))
        for path, digest in new:
            f.write("r %s %s\n" % (digest, path))
        for path in old:
            if path not in keep:
                f.write("d %s\n" % path)
        f.write("end\n")
    os.rename(tmp, stage + "/" + MARKER)


def read_marker(root):
    """(build, [(path, sha256)] to rename in order, [paths to delete]); Refused when the
    marker is unreadable or not whole."""
    build, renames, deletes, whole = None, [], [], False
    try:
        with open(root + STAGE + "/" + MARKER) as f:
            for n, line in enumerate(f):
                w = line.split()
                if n == 0:
                    if line.startswith(FORMAT + " ") and len(w) == 3:
                        build = w[2]
                        continue
                    break
                if whole:
                    whole = False  # lines after the end: not a marker this code wrote
                    break
                if w == ["end"]:
                    whole = True
                elif len(w) == 3 and w[0] == "r" and len(w[1]) == 64:
                    renames.append((w[2], w[1]))
                elif len(w) == 2 and w[0] == "d":
                    deletes.append(w[1])
                else:
                    break
    except (OSError, ValueError) as e:  # ValueError: bytes that are not UTF-8
        raise Refused(E_INSTALL_MARKER, "the install marker %s/%s cannot be read (%s)" % (STAGE, MARKER, e))
    if not whole:
        raise Refused(E_INSTALL_MARKER, "the install marker %s/%s is not one this firmware wrote whole "
                      "(format %r expected, an 'end' line last)" % (STAGE, MARKER, FORMAT))
    return build, renames, deletes


def _check(root, renames):
    # before anything is renamed: each file is staged (left to rename) or already in place
    # with the build's hash (renamed before the cut); the staged ones were checked by the
    # host before the marker was written, the others are hashed here
    left = 0
    for path, digest in renames:
        if _exists(root + STAGE + "/" + path):
            left += 1
            continue
        try:
            got = _sha256(root + "/" + path)
        except OSError:
            got = "missing"
        if got != digest:
            raise Refused(E_INSTALL_MISSING, "%s is neither staged in %s nor installed with the build's SHA-256 "
                          "(installed: %s)" % (path, STAGE, got[:16]))
    return left


def finish(root="", step=None, seen=None):
    """Install what the marker names: rename the staged files still there (in its order),
    delete the old package's leftovers, forget any application update but its replay
    floors, remove the staging dir (the marker last: a cut anywhere here is finished by the
    next boot). step(path) is called after each rename; `seen`, a list, gets the return
    value as soon as the files are checked. Returns (build, files staged before the first
    rename, files listed). Refused (nothing changed) when the marker or a file is not right."""
    build, renames, deletes = read_marker(root)
    left = _check(root, renames)
    if seen is not None and not seen:
        seen[:] = [build, left, len(renames)]
    for path, _ in renames:
        src = root + STAGE + "/" + path
        if _exists(src):
            _mkdirs(root, path)
            os.rename(src, root + "/" + path)
            if step is not None:
                step(path)
    for path in deletes:
        _remove(root + "/" + path)
    for path in set(p[:p.rfind("/")] for p in deletes if "/" in p):
        _rmdirs(root, path)
    forget_updates(root)
    _remove(root + STAGE + "/" + BUILD)  # first: a staging dir cut short here is no resumable build
    _rmtree(root + STAGE, keep=MARKER)
    _remove(root + STAGE + "/" + MARKER)
    try:
        os.rmdir(root + STAGE)
    except OSError:
        pass
    return build, left, len(renames)


def _rmdirs(root, path):
    # a folder the old package's leftovers emptied, and its parents while they are empty
    while path:
        try:
            os.rmdir(root + "/" + path)
        except OSError:
            return  # not empty (or gone)
        path = path[:path.rfind("/")] if "/" in path else ""


def forget_updates(root=""):
    """Drop every application update (the slots, the download, the boot count, the
    pointer's slot: the deployed set is the one that runs) but keep the replay floors in a
    pointer at the root set, where ppmid.update.slots reads them (state(), floors()), and
    a result not reported yet ("last" with "reported": false, and the offer's id): the
    deployed set's boot reports it (ppmid.update.report), so the update's sender still
    gets its answer (e.g. "rolled-back" after a new image's first boot failed)."""
    d = root + UPDATES
    try:
        with open(d + "/" + POINTER) as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = None
    kept = {}
    if isinstance(st, dict):
        for k in FLOORS:
            v = st.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                kept[k] = v
        last = st.get("last")
        if isinstance(last, dict) and last.get("reported") is False:
            kept["last"] = last
            if st.get("offer") is not None:
                kept["offer"] = st["offer"]
    if kept:
        # the pointer first (one rename: the root set runs from here on), then the rest
        kept["slot"] = ""
        tmp = d + "/" + POINTER + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(kept))
        os.rename(tmp, d + "/" + POINTER)
        _rmtree(d, keep=POINTER)
    else:
        _rmtree(d)


def _part_done(root):
    # after a finish that failed: whether part of the install is in place (a file the
    # marker names is no longer staged and has the build's SHA-256 where it belongs), so
    # the files in place are a mix of the two builds; not known without a readable marker
    try:
        _, renames, _ = read_marker(root)
    except Refused:
        return False
    for path, digest in renames:
        if not _exists(root + STAGE + "/" + path):
            try:
                if _sha256(root + "/" + path) == digest:
                    return True
            except OSError:
                pass
    return False


def _not_finished(root, log, code, why, then):
    # boot the files in place when they are the old set, whole; else stop the boot here,
    # before main.py imports a mix of the two builds
    if not _part_done(root):
        log("PPMID install: not finished (%s): %s; nothing renamed, the files in place run; %s" % (code, why, then))
        return False
    log("PPMID install: not finished (%s): %s; some files are new, some old: the app is not "
        "started (a mix of two builds); %s" % (code, why, then))
    raise Stopped(code)


def run(root="", log=print):
    """boot.py's call when a marker is there: finish the install (True: boot.py then
    soft-resets), or say why not. False: nothing renamed, the old set runs; Stopped: part
    of the install is in place and the rest cannot be now, the app must not start
    (docs/platform.md)."""
    try:  # a Ctrl-C (a tool connecting) is not delivered during the finish on the board
        import micropython
        micropython.kbd_intr(-1)
    except (ImportError, AttributeError):
        micropython = None  # CPython (the tests)
    try:
        seen = []
        # where Ctrl-C is still delivered, an interrupted finish starts over: each step
        # can be done again (what is renamed is no longer staged)
        for _ in range(5):
            try:
                if seen and not _exists(root + STAGE + "/" + MARKER):
                    # an earlier attempt got past its last step, the marker's removal
                    # (removed last): finished; what is left is the staging dir itself
                    _rmtree(root + STAGE)
                    build, left, listed = seen
                else:
                    finish(root, seen=seen)
                    build, left, listed = seen  # as the first attempt found them
                log("PPMID install: build %s finished at boot: %d of %d files were still staged"
                    % (build, left, listed))
                return True
            except KeyboardInterrupt:
                continue
            except Refused as e:
                return _not_finished(root, log, e.code, e.message, "run the deploy again")
            except OSError as e:
                return _not_finished(root, log, E_INSTALL_FLASH, repr(e), "the next boot tries again")
        return _not_finished(root, log, E_INSTALL_INTERRUPTED, "interrupted 5 times", "the next boot tries again")
    finally:
        if micropython is not None:
            micropython.kbd_intr(3)
