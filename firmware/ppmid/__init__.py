# PPMID gateway firmware package. Everything below runs unmodified on MicroPython
# (ESP32 boards and the unix port used as the emulated board) and, for tests and host
# tools, on CPython with host_tools.mpcompat providing the `micropython` module.
VERSION = "0.1.0"
