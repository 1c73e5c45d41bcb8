# Stand-in `network` for the heap gauge (the webassembly port has none).
STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010


class _Sta:
    def __init__(self):
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


_STA = _Sta()


def WLAN(interface=STA_IF):
    # the ESP32 port's station interface is one static object (wlan_sta_obj in
    # ports/esp32/network_wlan.c): WLAN(STA_IF) allocates nothing
    return _STA
