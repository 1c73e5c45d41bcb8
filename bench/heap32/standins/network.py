# Stand-in `network` for the heap gauge (the webassembly port has none). The station
# comes up once connect() names a network (a provisioned ssid), with the addresses DHCP
# would give (documentation addresses, RFC 5737; the resolver is the gauge's, h32.py);
# with no ssid it stays down, as a board's does.
STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
IFCONFIG = ("192.0.2.20", "255.255.255.0", "192.0.2.1", "192.0.2.53")


def ipconfig(name):
    if name == "dns":
        return IFCONFIG[3]
    raise ValueError(name)


class _Sta:
    def __init__(self):
        self._active = False
        self._up = False

    def active(self, on=None):
        if on is not None:
            self._active = bool(on)
        return self._active

    def connect(self, ssid=None, password=None, **k):
        self._up = bool(ssid) and self._active

    def disconnect(self):
        self._up = False

    def isconnected(self):
        return self._up

    def status(self, *a):
        return STAT_GOT_IP if self._up else STAT_IDLE

    def ifconfig(self, *a):
        return IFCONFIG if self._up else ("0.0.0.0",) * 4


_STA = _Sta()


def WLAN(interface=STA_IF):
    # the ESP32 port's station interface is one static object (wlan_sta_obj in
    # ports/esp32/network_wlan.c): WLAN(STA_IF) allocates nothing
    return _STA
