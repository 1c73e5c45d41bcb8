# Scratch files and folders for the firmware tests (CPython and the MicroPython unix port),
# made in $TMPDIR (else /tmp) and gone when the run ends, however it ends.
#
# A file is removed from its folder as soon as it is open: the open file lives on (POSIX)
# until the test drops it or the process ends, killed or timed out included, so nothing is
# left behind to fill a developer's /tmp (make test is run often on a field-trial laptop).
# A folder (under CPython a journal's flash is a host folder) is made in one folder of this
# process's, removed at exit; only a run killed outright (SIGKILL) leaves that one behind.
import os

_process_folder = []


def tmp_dir():
    """$TMPDIR, else /tmp: where the tools and tempfile put theirs, so one setting of TMPDIR
    moves every scratch file of a run."""
    return os.getenv("TMPDIR") or "/tmp"


def unique_path(prefix):
    """A path in tmp_dir() that no other run of any test picks (random, not a clock: two
    processes started in the same microsecond tick would otherwise share one)."""
    import binascii
    return "%s/%s-%s" % (tmp_dir(), prefix, binascii.hexlify(os.urandom(6)).decode())


def open_scratch(prefix):
    """A new, empty file opened for reading and writing ("w+b") whose name is already gone."""
    path = unique_path(prefix)
    f = open(path, "w+b")
    os.remove(path)
    return f


def scratch_folder(prefix):
    """A new empty folder, removed with everything in it when this process exits (CPython:
    the MicroPython side keeps its flash in open_scratch files)."""
    import tempfile
    if not _process_folder:
        import atexit
        import shutil
        folder = tempfile.mkdtemp(prefix="ppmid-fwtest-")
        atexit.register(shutil.rmtree, folder, True)
        _process_folder.append(folder)
    return tempfile.mkdtemp(prefix=prefix, dir=_process_folder[0])
