# Sent by `ppmid deploy` before copying (host_tools/deploy.py appends the call
# `_probe(STAGING)`): empty the staging dir, and say who is there (which chip too).
import os
import sys


def _rm(d):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _rm(p)
        else:
            os.remove(p)
    os.rmdir(d)


def _mcu(machine):
    # the ESP32 port ends _machine with the chip: "Generic ESP32S3 module with ESP32S3"
    i = machine.rfind(' with ')
    return machine[i + 6:].replace(' ', '') if i >= 0 else sys.platform


def _chip():
    # the chip this MicroPython runs on (sys.platform is "esp32" on every variant); the
    # emulated board's ROM hands over the board definition it emulates
    hw = sys.modules.get('_emuboard')
    if hw is not None:
        return hw.info.get('chip', '?')
    return _mcu(getattr(sys.implementation, '_machine', ''))


def _probe(stage):
    try:
        _rm(stage)
    except OSError:
        pass
    print('@@PROBE', sys.implementation.name, sys.implementation._mpy, sys.platform, _chip())
