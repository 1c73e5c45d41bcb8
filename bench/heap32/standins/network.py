# Stand-in `network` for the heap gauge (the webassembly port has none).
STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010


class WLAN:
    def __init__(self, *a):
        self._active = False

    def active(self, on=None):
        if on is not None:
            self._active = bool(on)
        return self._active

    def connect(self, *a, **k):
        pass

    def isconnected(self):
        return False

    def status(self, *a):
        return STAT_IDLE
