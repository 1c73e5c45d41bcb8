# boot.py: runs first on every boot (then main.py), from the flash root.
import micropython

try:
    micropython.alloc_emergency_exception_buf(100)
except AttributeError:
    pass
