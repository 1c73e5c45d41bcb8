# boot.py: runs first on every boot (then main.py), from the flash root.
import micropython

try:
    micropython.alloc_emergency_exception_buf(100)
except AttributeError:
    pass

# A deploy whose install a reset cut short left its marker: finish the install before
# anything imports ppmid (install.py; docs/platform.md `ppmid deploy`), then soft-reset, so
# that the app starts on a heap that never held the install (the names its module interns
# stay until a reset). On other boots this costs one stat and leaves nothing behind: its
# names are ones MicroPython has already (install, run; measured, docs/platform.md).
import os

try:
    os.stat("/.deploy-new/.install")  # = install.STAGE + "/" + install.MARKER
    import install
except OSError:  # no marker: nothing to finish (every boot but the one after a cut)
    install = None
except ImportError:  # cannot happen through a deploy: install.mpy is renamed before boot.py
    install = None
    print("PPMID install: not finished (E_INSTALL_MISSING): there is a marker but no /install.mpy; "
          "run the deploy again")
if install:
    # run() raises install.Stopped when part of the install is in place and the rest cannot
    # be (a flash error): out of boot.py it ends the boot before main.py, at the REPL
    if install.run():
        raise SystemExit  # a soft reset, as on any MicroPython board; the marker is gone
    import sys  # refused: boot on, the refusal said, nothing of it kept
    import gc
    sys.modules.pop("install", None)
    gc.collect()
    del sys, gc
del os, install
