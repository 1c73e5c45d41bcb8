"""host_tools.sntp_server against the firmware's SNTP codec (CPython): good replies parse
to the host's time; held-back requests get no answer; each bad mode is refused by
ppmid.sntp.parse for the reason it stands for."""
import os
import socket
import time

import pytest

from host_tools import mpcompat
from host_tools.sntp_server import SntpServer

mpcompat.install()
from ppmid import sntp  # noqa: E402


def ask(port, timeout=5.0):
    # a generous wait: a loaded CI host (2 cores) once took over 1 s to schedule the
    # server's thread; the tests that expect silence pass their own short timeout
    nonce = os.urandom(8)
    buf = sntp.request(bytearray(48), nonce)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(buf, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(512)
        except socket.timeout:
            return None, nonce
        return data, nonce
    finally:
        s.close()


def test_good_reply_is_the_host_time():
    with SntpServer() as srv:
        before = time.time()
        data, nonce = ask(srv.port)
        after = time.time()
        assert data is not None, "the server did not answer"
        unix, ms = sntp.parse(data, nonce)
        # the server's time lies between our send and our receive (1 s for rounding)
        assert before - 1 <= unix + ms / 1000 <= after + 1
        assert srv.answered == 1


def test_held_back_then_released():
    with SntpServer(hold_s=30) as srv:
        assert ask(srv.port, 0.3)[0] is None and srv.dropped == 1
        srv.release()
        data, nonce = ask(srv.port)
        assert sntp.parse(data, nonce)
    with SntpServer(hold_s=0.3) as srv:
        assert ask(srv.port, 0.1)[0] is None
        time.sleep(0.4)
        assert ask(srv.port)[0] is not None


@pytest.mark.parametrize("mode,why", [("garbage", ""), ("spoof", "originate"), ("kiss", "kiss"),
                                      ("unsynced", "LI=3"), ("short", "short")])
def test_bad_modes_are_refused_by_the_codec(mode, why):
    with SntpServer(mode=mode) as srv:
        data, nonce = ask(srv.port)
        with pytest.raises(sntp.SntpError) as e:
            sntp.parse(data, nonce)
        assert why in e.value.args[0]


def test_offset_mode():
    with SntpServer(mode="offset", offset_s=-3600) as srv:
        data, nonce = ask(srv.port)
        assert abs(sntp.parse(data, nonce)[0] + 3600 - time.time()) < 2
