"""The firmware's phone session (CPython through host_tools.mpcompat) against the PN532
emulator's PhoneApp (written from docs/nfc.md), in-process at the APDU level: the result
status an app gets for a command the meter had already executed (05), and what an app is
told when it stumbles after its command was accepted (64 00 E_NFC_LATE, then a collect
tap gets the result)."""
import asyncio

from host_tools import mpcompat

mpcompat.install()

from ppmid import envelope  # noqa: E402
from ppmid.nfc import phone  # noqa: E402
from ppmid.nfc.apdu import select_aid  # noqa: E402
from host_tools.pn532_emulator import PhoneApp  # noqa: E402
from host_tools.pn532_emulator.fixture import KEY  # noqa: E402


class AppLink:
    """InDataExchange straight to a PhoneApp; `stumble`: the instruction byte whose first
    APDU the app answers with 6F00 instead (a glitch in the app)."""

    def __init__(self, app, stumble=None):
        self.app = app
        self.stumble = stumble

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        data = bytes(data)
        if data[0] == 0x80 and data[1] == self.stumble:
            self.stumble = None
            r = b"\x6f\x00"
        else:
            r = self.app.exchange(data)
        out[:len(r)] = r
        return len(r)


class Relay:
    def __init__(self, answer=None):
        self.answer = answer
        self.accepted = []
        self.delivered_ids = []

    async def accept(self, env, via):
        env.verify(KEY)
        self.accepted.append((env.id, via))

    def result(self, id):
        return self.answer

    def delivered(self, id, via):
        self.delivered_ids.append((id, via))


def tap(app, relay, stumble=None):
    async def go():
        app.activate()
        hello = app.exchange(select_aid(phone.AID))
        assert hello[-2:] == b"\x90\x00"
        s = phone.PhoneSession(AppLink(app, stumble), 1, relay, 8192, session_ms=300,
                               poll_ms=5, keepalive_ms=20)
        return await s.run(hello[:-2])
    return asyncio.run(go())


def signed(id):
    return envelope.to_binary(envelope.sign(KEY, id, bytes(range(200))))


def test_app_gets_already_executed_not_failed():
    relay = Relay({"status": "already-executed", "gbcs": None, "error": None})
    app = PhoneApp(signed("c-7"), id="c-7")
    o = tap(app, relay)
    assert o["outcome"] == "delivered"
    assert app.result == {"status": "already-executed", "gbcs": None, "code": "", "message": ""}
    assert relay.delivered_ids == [("c-7", "nfc-phone")]


def test_app_that_stumbles_after_accept_is_told_to_collect_later():
    relay = Relay(None)
    app = PhoneApp(signed("c-9"), id="c-9")
    o = tap(app, relay, stumble=0x30)     # the OK STATUS answered 6F00
    assert relay.accepted == [("c-9", "nfc-phone")]
    assert o["outcome"] == "late" and o["accepted"] is True and o["code"] == "E_NFC_PROTO"
    sw, code, message = app.statuses[-1]
    assert (sw, code) == (0x6400, "E_NFC_LATE") and message.startswith("c-9 is accepted and journaled"), app.statuses
    assert not [s for s in app.statuses if s[0] == 0x6A80]
    # as docs/nfc.md tells the app: tap again in mode 02
    relay.answer = {"status": "response", "gbcs": b"\x01\x02\x03", "error": None}
    collect = PhoneApp(collect_id="c-9")
    o = tap(collect, relay)
    assert o["outcome"] == "delivered" and collect.result["gbcs"] == b"\x01\x02\x03"
    assert collect.result["status"] == "response"
