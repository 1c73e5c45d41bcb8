"""An ordered re-commission onto a new CH at EZSP v14, end to end (issue #16, review r9-1):
the emulated board's module speaks EZSP v14, whose incomingMessageHandler names each frame's
sender EUI-64, and the gateway takes tunnel and Time frames only from the trust centre's.
The gateway commissions with the emulated CH; the installer then replaces the CH by another
unit with another EUI-64 (NcpEmulator.replace_ch: a new trust centre forming its own
network, the old network gone, so no rejoin finds it) and the operator sends a signed
re-commission order (`ppmid commission`, host_tools.commission_order). The gateway must
leave, commission with the new CH, read the new trust centre (its info's commissioning
steps and its console name it), and relay a DCC User's command to a meter through the new
CH. Then the old CH's EUI-64 is no longer the CH's: a RequestTunnel and a TransferData
carrying an alert, APS-encrypted from NWK 0x0000 but named with the old CH's EUI-64, are
dropped (no tunnel answer, no alert published; the first such drop logged, counted in
rx_unsecured), while the new CH's own alert is published.

The point is the v14 read of the trust centre again on the network's down->up through an
ordered re-commission (zigbee/han.py STACK_STATUS_HANDLER): with the old EUI-64 kept, every
frame of the new CH, its RequestTunnel first, would be dropped, and no command could reach
the new CH until a reset. tests/test_e2e_commission_order.py is the same order at the
default version onto the same CH."""
import base64
import json
import re
import sys
import threading
import time

import pytest

from host_tools import emulate as E
from host_tools import commission_order as O
from host_tools import mqtt_tools as mt
from host_tools import mpcompat
from host_tools.ncp_emulator.ch import ESME, SUPPLIER
from tests.conftest import FIRMWARE_TESTS
from tests.test_e2e_clock import info
from tests.test_e2e_commission_order import _until

mpcompat.install()
from ppmid.gbcs import build  # noqa: E402
from ppmid.zigbee import tunnel_host as TH  # noqa: E402

sys.path.insert(0, FIRMWARE_TESTS)
import update_vectors as UV  # noqa: E402  (the test operator key: public here)

CODE = "83FED3407A939723A5C639B26916D505C3B5"
OLD_CH = "0000B0D5B3FFFF00"        # the emulated CH's trust-centre EUI-64 (commissioning.TrustCentre)
NEW_CH = "0000B0D5B3FF7E21"        # the unit the installer puts in its place


class _Alerts:
    """A DCC User subscribed to the gateway's alert topic: the GBCS of each alert."""

    def __init__(self, emu):
        self.got = []
        self.cond = threading.Condition()
        self.c = mt.paho_client(emu.broker_dir, "dcc-user-test")
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        mt.connect(self.c, emu.broker_dir)
        self.c.subscribe("ppmid/v1/%s/alert" % emu.gateway, 1)
        # an alert published before the broker has the subscription would never reach us
        assert subscribed.wait(10), "the broker did not acknowledge the alert subscription"

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.got.append(base64.b64decode(json.loads(msg.payload)["gbcs"]))
            self.cond.notify_all()

    def wait_for(self, gbcs, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while gbcs not in self.got:
                left = end - time.monotonic()
                assert left > 0, "alert not published; got %r" % self.got
                self.cond.wait(left)
            return list(self.got)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e-commission-order-v14"), ezsp_version=14,
                    overrides={"update": {"public_key": UV.PUBLIC}},
                    commissioning={"install_code": CODE}, log=None)
    with e:
        yield e


def _tc(emu):
    return emu.ncp.commissioning_state()


def _commissioned_with(emu, eui):
    st = _tc(emu)
    return st["tc_eui64"] == eui and st["tc_counters"]["ke_ok"] == 1 and \
        emu.ncp.call(lambda: emu.ncp.ch.tunnel_id is not None)


def _subject_step(eui):
    return "cbke: CH certificate, subject %s (the trust centre)" % eui.lower()


def test_v14_order_moves_the_gateway_to_a_new_ch_which_then_carries_commands(emu, tmp_path):
    _until(lambda: _commissioned_with(emu, OLD_CH), "the first commissioning")
    # the module speaks v14, and the gateway took the CH's certificate as the trust centre's
    emu.board.wait_for(r"han: module: EZSP v14,", 10, since=emu.console_start)
    assert _subject_step(OLD_CH) in emu.commissioning_report()["steps"]
    mark = emu.board.mark()

    # the installer swaps the CH: the old network goes, the new CH forms its own
    assert emu.ncp.replace_ch(NEW_CH) == OLD_CH
    st = _tc(emu)
    assert st["tc_eui64"] == NEW_CH and st["tc_counters"]["joins_admitted"] == 0 and not st["joined"], st
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    sent = O.push(emu.broker_dir, emu.gateway, str(pem), timeout=30)
    assert sent["state"] == "accepted" and sent["sequence"] == 1, sent

    # the gateway left, joined the new CH's network and completed key establishment with it
    _until(lambda: _tc(emu)["tc_counters"]["ke_ok"] == 1, "key establishment with the new CH")
    # then the new CH's tunnel: its RequestTunnel (sent again every 2 s) is taken only once
    # the gateway holds the new trust centre's EUI-64, read again after the join
    since = emu.board.mark()
    if not emu.ncp.wait_until(lambda: emu.ncp.ch.tunnel_id is not None, 30):
        text = emu.board.console_bytes()[since:].decode("utf-8", "replace")
        pytest.fail("the new CH's tunnel never opened; the console since key establishment:\n" + text[-1500:])
    assert _commissioned_with(emu, NEW_CH)
    st = _tc(emu)
    assert st["leaves"] == 1 and st["tc_counters"]["joins_admitted"] == 1, st
    # it reports the new trust centre: its info's commissioning steps, and its console the
    # trust centre it now holds the tunnel and Time frames to (the v14 read again)
    now = info(emu, lambda d: d["han"] == "running"
               and _subject_step(NEW_CH) in (d.get("commissioning") or {}).get("steps", ()), 30)
    assert now["commissioning"]["state"] == "commissioned" and now["commissioning"]["cbke"] == "ok", now
    emu.board.wait_for(r"han: trust centre %s: tunnel and Time frames from it alone" % NEW_CH, 10,
                       since=mark)
    rep = emu.commissioning_report()
    assert any(s.startswith("re-commission: ordered by the host tools (order 1)") for s in rep["steps"]), rep
    assert any("joined PAN 0x1a63" in s for s in rep["steps"]), rep["steps"]

    # a DCC User's command reaches the meter through the new CH, and its response comes back
    (_, cmd), = E.renumbered_commands(1)
    r = emu.replayer(settle_s=20)
    r.connect()
    try:
        out = r.run([{"at_ms": 0, "id": "after-new-ch", "gbcs": cmd, "via": "mqtt",
                      "expect": {"status": "response"}}])
    finally:
        r.close()
    assert out["responses"] == 1 and out["lost_count"] == 0 and out["mismatches"] == [], out
    assert bytes(cmd) in emu.ncp.received


def test_v14_the_old_chs_eui64_is_refused_after_the_new_ch(emu):
    assert _commissioned_with(emu, NEW_CH), "runs after the re-commission onto the new CH"
    ch = emu.ncp.ch
    tid = emu.ncp.call(lambda: ch.tunnel_id)
    unmatched = emu.ncp.call(lambda: ch.counters["tunnel_response_unmatched"])
    mark = emu.board.mark()
    alerts = _Alerts(emu)
    try:
        # frames from NWK 0x0000, APS-encrypted, that the module names with the old CH's
        # EUI-64: a RequestTunnel (taken, it would replace the tunnel and be answered) and a
        # TransferData on the live tunnel carrying a meter's alert (taken, it would be published)
        emu.ncp.forge_from_ch(TH.request_tunnel(0x9A, max_in=1500), eui64=OLD_CH)
        forged = build.build_signed(3, 0x0100000000007777, bytes.fromhex(ESME), bytes.fromhex(SUPPLIER), 0x8F66,
                                    b"\x0f\x00\x00\x00\x00\x00")
        emu.ncp.forge_from_ch(TH.transfer_data(0x9B, tid, forged, False), eui64=OLD_CH)
        # then the new CH's own alert: published, and the forged one (sent first) never
        genuine = emu.ncp.send_alert("ESME")
        got = alerts.wait_for(genuine, 20)
        time.sleep(0.5)
        assert forged not in alerts.got, got
    finally:
        alerts.close()
    # counted with rx_unsecured, the first of them logged (the count is not in the info): a
    # drop before the mark (a CH frame that came while a read was pending) took the log line
    dropped = rb"han: cluster 0x0704 frame from 0x0000: its sender EUI-64 is not the trust centre's"
    if re.search(dropped, emu.board.console_bytes()[emu.console_start:mark]) is None:
        emu.board.wait_for(dropped, 10, since=mark)
    # the forged RequestTunnel was never answered and the CH's tunnel stays
    assert emu.ncp.call(lambda: ch.counters["tunnel_response_unmatched"]) == unmatched
    assert emu.ncp.call(lambda: ch.tunnel_id) == tid
