"""Undefined names in host_tools/ and firmware/, found by pyflakes (review r1-1: a name moved
into a nested function left a NameError on the ROMFS deploy's one read-back check, a path no
test ran). pyflakes reads the source without running it, so it finds such names on paths the
other tests never take. Only its undefined-name messages count here (what ruff calls F821,
F822, F823); its other findings (unused imports and the like) are a matter of style."""
import os

import pytest

from host_tools.boards import CHECKOUT

try:
    from pyflakes import api, reporter
except ImportError:  # a venv made before pyflakes joined the dev dependencies
    api = None

CHECKED = ("host_tools", "firmware")

# Names pyflakes cannot see defined, each one checked by hand: (file, name) -> why it is
# there when the code runs. Every entry must still be reported (the last test), so the list
# shrinks with the code and never hides a new name elsewhere in the same file.
KNOWN = {
    # viper's pointer casts are built into MicroPython's @micropython.viper compiler, not names
    ("firmware/ppmid/zigbee/_ash_fast.py", "ptr8"): "viper builtin",
    # board scripts are sent as fragments, concatenated on the board: deploy_hash.py (which
    # defines _sha256_hex) goes first (host_tools/deploy.py)
    ("host_tools/board_scripts/deploy_probe.py", "_sha256_hex"): "deploy_hash.py, sent before it",
    # the emulated board's ROM calls _rom_open before its last line deletes these module names
    # (the flash's programs must not see them); pyflakes reads the `del` as coming first
    ("host_tools/board_scripts/rom.py", "_Hw"): "deleted at the end, after its use",
    ("host_tools/board_scripts/rom.py", "_T0"): "deleted at the end, after its use",
}

UNDEFINED = ("UndefinedName", "UndefinedExport", "UndefinedLocal")


class _Collect(reporter.Reporter if api else object):
    def __init__(self):
        self.found = []  # (file relative to the checkout, line, name, message)
        self.broken = []  # files pyflakes could not read: a guard that skipped them is none

    def flake(self, message):
        if type(message).__name__ in UNDEFINED:
            path = os.path.relpath(message.filename, CHECKOUT).replace(os.sep, "/")
            self.found.append((path, message.lineno, message.message_args[0], str(message)))

    def syntaxError(self, filename, msg, lineno, offset, text):
        self.broken.append("%s:%s: %s" % (filename, lineno, msg))

    def unexpectedError(self, filename, msg):
        self.broken.append("%s: %s" % (filename, msg))


def undefined_names(paths):
    """pyflakes' undefined-name findings under `paths` (files or dirs): (found, broken)."""
    if api is None:
        pytest.fail("pyflakes is not installed in this venv: run `make setup` (it is a dev dependency)")
    found = _Collect()
    api.checkRecursive(list(paths), found)
    return found.found, found.broken


@pytest.fixture(scope="module")
def checked():
    return undefined_names([os.path.join(CHECKOUT, d) for d in CHECKED])


def test_no_undefined_names_in_host_tools_or_firmware_but_the_known_ones(checked):
    found, broken = checked
    assert not broken, "pyflakes could not read: %s" % broken
    new = [text for path, _, name, text in found if (path, name) not in KNOWN]
    assert not new, "undefined names (a NameError when that line runs):\n" + "\n".join(new)


def test_every_known_false_positive_is_still_reported(checked):
    found, _ = checked
    reported = {(path, name) for path, _, name, _ in found}
    assert set(KNOWN) - reported == set(), "no longer reported: take them off KNOWN"


def test_the_guard_reports_a_name_moved_into_a_nested_function(tmp_path):
    # the shape of review r1-1's defect, in a file of its own
    bad = tmp_path / "moved.py"
    bad.write_text("def deploy(port):\n"
                   "    def body():\n"
                   "        what = 'write %s' % port\n"
                   "        return what\n"
                   "    body()\n"
                   "    raise ValueError('%s: read back wrong' % what)\n"
                   "__all__ = ['deploy', 'gone']\n")
    found, broken = undefined_names([str(bad)])
    assert not broken
    assert sorted((line, name) for _, line, name, _ in found) == [(6, "what"), (7, "gone")]
    (tmp_path / "cut.py").write_text("def f(:\n")
    _, broken = undefined_names([str(tmp_path / "cut.py")])
    assert len(broken) == 1 and "cut.py:1" in broken[0]
