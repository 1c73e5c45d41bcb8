# The MQTT client against a broker or network that misbehaves in the ways review r13 found it
# mishandled: a broker address that drops SYNs (each timed-out dial used to leave its socket
# open on MicroPython), a broker stream that stalls while our QoS 0 log lines still go out
# (they used to stop the keepalive ping, so the dead link went unnoticed), a malformed PUBLISH
# that a persistent session redelivers first at every connect. Its brokers are asyncio servers
# answering with raw bytes, under CPython and MicroPython.
# mp-timeout: 180
import asyncio
import random

from ppmid.mqtt import packets as p
from ppmid.mqtt.client import MQTTClient, tls_connector
from ppmid.mqtt.link_host import stats

EUI = "00DB1234567890A0"
CMD = "ppmid/v1/" + EUI + "/cmd"


def _open_fds():
    import os
    try:
        return len(os.listdir("/proc/self/fd"))
    except AttributeError:  # MicroPython's os
        return len(list(os.ilistdir("/proc/self/fd")))


def _blackhole():
    # a port whose accept queue is full: further SYNs are dropped and a connect hangs, as to
    # a broker address behind a firewall that drops them. Returns (port, sockets to close).
    import socket
    for _ in range(50):
        port = 20000 + random.getrandbits(13)
        srv = socket.socket()
        try:
            srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            srv.close()
            continue
        srv.listen(0)
        fill = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            except OSError:
                pass
            fill.append(s)
        return port, [srv] + fill
    raise AssertionError("no free port")


class _Wlan:
    """The board's WLAN as the connector sees it: it tracks each dial's socket (to close it
    when Wi-Fi drops) until the socket is untracked."""

    def __init__(self):
        self.tracked = []
        self.ever = 0

    def track(self, sock):
        self.tracked.append(sock)
        self.ever += 1

    def untrack(self, sock):
        if sock in self.tracked:
            self.tracked.remove(sock)


async def test_a_dial_that_times_out_closes_and_untracks_its_socket():
    # review r13-2: the connect timeout cancels the dial while it waits for the SYN's answer;
    # MicroPython's dial (ppmid.mqtt.handshake._mp_open_stream) left that socket open and
    # tracked, one per attempt: an ESP32's lwIP has ~10 sockets
    import gc
    port, keep = _blackhole()
    wlan = _Wlan()
    c = MQTTClient(EUI, tls_connector("127.0.0.1", port, track=wlan.track, wlan=wlan),
                   connect_timeout=0.2, backoff_min=0.05, backoff_max=0.1)
    before = _open_fds()
    task = asyncio.create_task(c.run())
    try:
        for _ in range(500):
            if stats(c)["connect_failures"] >= 5:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        try:
            await task
        except BaseException:
            pass
    gc.collect()
    after = _open_fds()
    for s in keep:
        s.close()
    fails = stats(c)["connect_failures"]
    assert fails >= 5, (fails, c.last_error)
    assert "E_MQTT_TIMEOUT" in c.last_error and "connect" in c.last_error, c.last_error
    # each timed-out dial's socket is closed (the cancelled run's last dial at most still open
    # on CPython until its transport's close runs) and none stays tracked
    assert after - before <= 1, (before, after, fails)
    assert wlan.tracked == [], len(wlan.tracked)
