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
    if "cryptolib" not in sys.modules:
        sys.modules["cryptolib"] = _cryptolib()


class _Aes:
    """MicroPython's cryptolib.aes, the ECB mode only (what the firmware uses)."""

    def __init__(self, key, mode, iv=None):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        if mode != 1:
            raise ValueError("only ECB (mode 1) is modelled")
        self._cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB())

    def encrypt(self, data):
        enc = self._cipher.encryptor()
        return enc.update(bytes(data)) + enc.finalize()

    def decrypt(self, data):
        dec = self._cipher.decryptor()
        return dec.update(bytes(data)) + dec.finalize()


def _cryptolib():
    mod = types.ModuleType("cryptolib")
    mod.aes = _Aes
    return mod
