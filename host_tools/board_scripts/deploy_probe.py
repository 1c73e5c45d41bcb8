# Sent by `ppmid deploy` before copying (host_tools/deploy.py appends the call
# `_probe(STAGING)`): empty the staging dir, and say who is there.
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


def _probe(stage):
    try:
        _rm(stage)
    except OSError:
        pass
    print('@@PROBE', sys.implementation.name, sys.implementation._mpy, sys.platform)
