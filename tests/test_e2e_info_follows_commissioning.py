"""The retained info follows commissioning without a reconnect (issue #16,
ppmid.mqtt.info_follow): the emulated CH's device log holds another install code, so every
join is refused; a DCC User subscribed to the gateway's info sees the failure arrive (a live
info, not only the retained one of the connect) while the gateway stays connected (one
`online` on its state topic, no Wi-Fi drop); once the installer puts the right code in the
device log, the info says commissioned and then the HAN running, and the retained info a new
subscriber reads says so too. The infos come paced (the HAN flips between commissioning
and commission-failed every few seconds meanwhile). The whole product on the emulated board
(host_tools.emulate)."""
import json
import threading
import time

from host_tools import emulate as E
from host_tools import mqtt_tools as mt
from host_tools import mpcompat
from tests.test_e2e_clock import info

mpcompat.install()
from ppmid.mqtt import info_follow  # noqa: E402
from ppmid.zigbee import installcode as IC  # noqa: E402

CODE = "83FED3407A939723A5C639B26916D505C3B5"
OTHER = "0102030405060708D46D"   # valid, not the gateway's
FAST = {"zigbee": {"backoff_max_s": 2}}


class _Watcher:
    """A DCC User subscribed to the gateway's state and info: every message, with its
    arrival time and retain flag."""

    def __init__(self, emu):
        self.got = []     # (monotonic s, topic leaf, retained, payload dict)
        self.cond = threading.Condition()
        self.c = mt.paho_client(emu.broker_dir, "dcc-user-test")
        self.c.on_message = self._on_message
        mt.connect(self.c, emu.broker_dir)
        base = "ppmid/v1/%s/" % emu.gateway
        self.c.subscribe([(base + "state", 1), (base + "info", 1)])

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.got.append((time.monotonic(), msg.topic.rsplit("/", 1)[1], bool(msg.retain), json.loads(msg.payload)))
            self.cond.notify_all()

    def wait(self, want, timeout):
        """The first live info (published while subscribed) matching want."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, leaf, retained, d in self.got:
                    if leaf == "info" and not retained and want(d):
                        return d
                left = end - time.monotonic()
                assert left > 0, "no matching live info; the last: %r" % [g for g in self.got if g[1] == "info"][-1:]
                self.cond.wait(left)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _commissioning(d):
    return d.get("commissioning") or {}


def test_info_follows_a_failing_then_fixed_commissioning_without_a_reconnect(tmp_path):
    emu = E.Emulation(tmp_path / "emu", overrides=FAST, log=None,
                      commissioning={"install_code": CODE, "ch_install_code": OTHER})
    with emu:
        emu.wait_online(60)
        w = _Watcher(emu)
        try:
            start = time.monotonic()
            failed = w.wait(lambda d: _commissioning(d).get("error") == "E_COMMISSION_JOIN_REFUSED", 60)
            assert failed["han"] in ("commissioning", "commission-failed"), failed
            assert "this PPMID's EUI-64 is not in the CH's device log" in _commissioning(failed)["detail"], failed
            # the installer has the right code put in the CH's device log (through the DCC)
            emu.ncp.call(emu.ncp.ch.trust_centre.device_log.__setitem__, bytes.fromhex(emu.gateway), IC.parse(CODE))
            done = w.wait(lambda d: _commissioning(d).get("state") == "commissioned", 90)
            assert _commissioning(done)["cbke"] == "ok" and "error" not in _commissioning(done), done
            w.wait(lambda d: d["han"] == "running" and _commissioning(d).get("state") == "commissioned", 60)
            elapsed = time.monotonic() - start
        finally:
            w.close()
        # one connection all along: the gateway said online once (the retained one we read
        # at subscribe time) and never went offline
        states = [d["state"] for t, leaf, retained, d in w.got if leaf == "state"]
        assert states == ["online"], states
        # paced: at most one info per EVERY_MS while the HAN flipped every few seconds
        live = [t for t, leaf, retained, d in w.got if leaf == "info" and not retained]
        assert len(live) <= elapsed * 1000 // info_follow.EVERY_MS + 2, (len(live), elapsed)
        # a DCC User reading the retained info now gets the commissioned, running gateway
        i = info(emu, lambda d: d["han"] == "running", 20)
        assert _commissioning(i)["state"] == "commissioned" and _commissioning(i)["attempts"] >= 2, i
