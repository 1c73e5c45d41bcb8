# boot.py: runs first on every boot (then main.py), from the flash root.
import micropython

try:
    micropython.alloc_emergency_exception_buf(100)
except AttributeError:
    pass

# A deploy whose install a reset cut short left its marker: finish the install before
# anything imports ppmid (install.py; docs/platform.md `ppmid deploy`). On other boots
# this costs one stat; nothing stays loaded either way.
import os

try:
    os.stat("/.deploy-new/.install")  # = install.STAGE + "/" + install.MARKER
    _finish = True
except OSError:
    _finish = False
if _finish:
    import sys
    try:
        import install
        install.at_boot()
        del install
    except ImportError as e:
        print("PPMID install: not finished (E_INSTALL_MISSING): no install module (%s)" % e)
    sys.modules.pop("install", None)
    import gc
    gc.collect()
    del sys, gc
del os, _finish
