"""Lets CPython import firmware modules.

The firmware imports `micropython` for const() and the native/viper emitters. CPython has
no such module, so host tools and CPython tests register this stand-in before importing
anything from `firmware/`. Viper code itself never runs here: firmware keeps viper
functions in modules that are only imported under MicroPython, with a plain fallback.
"""
import sys
import types

from host_tools.boards import FIRMWARE_DIR  # noqa: F401 - tests read it from here


def _identity(fn):
    return fn


def install():
    """Make `import ppmid...` and `import micropython` work under CPython. Idempotent."""
    if "micropython" not in sys.modules:
        mod = types.ModuleType("micropython")
        mod.const = lambda x: x
        mod.native = _identity
        mod.viper = _identity
        mod.mem_info = lambda *a: None
        mod.alloc_emergency_exception_buf = lambda n: None
        mod.schedule = lambda fn, arg: fn(arg)
        sys.modules["micropython"] = mod
    if FIRMWARE_DIR not in sys.path:
        sys.path.insert(0, FIRMWARE_DIR)
