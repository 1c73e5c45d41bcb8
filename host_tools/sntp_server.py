"""A small SNTP server on loopback for the emulated gateway (`ppmid emulate`, tests).

It answers NTPv4 client requests with the host's time (stratum 2), from a thread. For
tests it can be held back (it reads requests and drops them) for the first `hold_s`
seconds or until release(), and it can answer badly on purpose:

    mode        reply
    "good"      a proper server reply
    "garbage"   48 random bytes
    "spoof"     a proper reply whose originate timestamp is not the request's
    "kiss"      stratum 0, kiss code RATE (kiss-o'-death)
    "unsynced"  leap indicator 3 (the server's clock is not synchronised)
    "short"     the first 20 bytes of a proper reply
    "offset"    a proper reply, `offset_s` seconds off the host's time

    with SntpServer(hold_s=5) as srv:
        cfg["sntp"] = {"servers": ["127.0.0.1"], "port": srv.port}
"""
import os
import struct
import threading
import time

from host_tools.udp_server import LoopbackUdpServer

NTP_UNIX = 2208988800
MODES = ("good", "garbage", "spoof", "kiss", "unsynced", "short", "offset")


def ntp_timestamp(unix):
    """Unix seconds (float) -> the 8 bytes of an NTP timestamp (era wrap included)."""
    secs = int(unix) + NTP_UNIX
    frac = int((unix - int(unix)) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(">II", secs & 0xFFFFFFFF, frac)


def build_reply(request, now, mode="good", offset_s=0.0):
    """The reply to a 48-byte client request at host time `now` (unix seconds)."""
    if mode == "garbage":
        return os.urandom(48)
    version = (request[0] >> 3) & 7 or 4
    li = 3 if mode == "unsynced" else 0
    stratum = 0 if mode == "kiss" else 2
    t = now + (offset_s if mode == "offset" else 0.0)
    b = bytearray(48)
    b[0] = li << 6 | version << 3 | 4
    b[1] = stratum
    b[2] = request[2]                                        # poll, echoed
    b[3] = 0xEC                                              # precision ~2**-20 s
    b[12:16] = b"RATE" if mode == "kiss" else b"LOCL"       # reference id / kiss code
    b[16:24] = ntp_timestamp(t - 16)                         # reference time
    b[24:32] = os.urandom(8) if mode == "spoof" else request[40:48]   # originate = their transmit
    b[32:40] = ntp_timestamp(t)                              # receive
    b[40:48] = ntp_timestamp(t)                              # transmit
    return bytes(b[:20]) if mode == "short" else bytes(b)


class SntpServer(LoopbackUdpServer):
    NAME = "sntp-server"

    def __init__(self, host="127.0.0.1", port=0, hold_s=0.0, mode="good", offset_s=0.0, log=None):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % ", ".join(MODES))
        super().__init__(host, port, log)
        self.hold_s = hold_s
        self.mode = mode
        self.offset_s = offset_s
        self.requests = 0      # requests received (answered: replies sent, any mode)
        self.dropped = 0       # requests held back
        self._released = threading.Event()
        self._t0 = None

    def start(self):
        self._t0 = time.monotonic()
        super().start()
        self.log("SNTP server on %s:%d%s" % (self.host, self.port,
                                              " (held back for %ss)" % self.hold_s if self.hold_s else ""))
        return self

    def held(self):
        return not self._released.is_set() and time.monotonic() - self._t0 < self.hold_s

    def release(self):
        """Answer from now on (ends the hold)."""
        self._released.set()

    def set_mode(self, mode, offset_s=None):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % ", ".join(MODES))
        self.mode = mode
        if offset_s is not None:
            self.offset_s = offset_s

    def answer(self, data):
        self.requests += 1
        if len(data) < 48 or data[0] & 7 != 3:
            return None                                      # not a client request
        if self.held():
            self.dropped += 1
            return None
        return build_reply(data, time.time(), self.mode, self.offset_s)
