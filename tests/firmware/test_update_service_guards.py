# mp-heapsize: 384K  (a whole file of tests in one 64-bit interpreter: the test code and every module the file loads stay; the app's own 32-bit figures are the heap32 bench rows)
# The update service's guards (ppmid.update.service), apart from test_update_service.py
# because test_update_image.py imports that module and the MicroPython test heap holds only
# so much test code: the switch task's failures (a pointer that cannot be written; once the
# new set is pointed at, the reset comes whatever happens to the status), the one limit of
# failed signatures on the update topics, and a manifest's expiry on the gateway's clock.
# CPython and MicroPython.
import asyncio
from ppmid.update import service as S
from ppmid.update import slots
from ppmid.update.manifest import E_UPDATE_SIGNATURE
from test_relay_support import fresh_signature_limits
from test_update_service import _Relay, _serve, _settle, _setup, _updater
from update_vectors import PUBLIC, signed_offer


def test_a_pointer_write_failing_at_the_switch_is_refused_and_the_next_offer_is_handled():
    # the switch runs as a task: a failure there was lost, leaving the updater "switching"
    # for ever with no status (review M3)
    root = _setup()
    real = slots.switch

    def full(*a):
        raise OSError(28)

    async def go():
        u = _updater(root, _Relay())
        await u.handle(u.topic + "/offer", signed_offer("real", "o1"))
        slots.switch = full
        try:
            await _serve(u)
            await _settle()
        finally:
            slots.switch = real
        st = u.client.last()
        assert st["state"] == "refused" and st["id"] == "o1" and st["version"] == "0.2.0", st
        assert st["error"]["code"] == S.E_UPDATE_FLASH and "28" in st["error"]["message"], st
        assert not u.switching and u.stage is None and u.board.resets == 0
        assert slots.state(root) == {"slot": ""} and not slots.exists(root + "/upd/a")
        assert slots.floor(slots.state(root)) == 0  # a failed switch raises no replay floor
        await u.handle(u.topic + "/offer", signed_offer("real", "o2"))
        assert u.client.last()["state"] == "downloading" and u.client.last()["id"] == "o2"
        await _serve(u)
        await _settle()
        return u
    u = asyncio.run(go())
    assert u.client.last()["state"] == "switching" and u.board.resets == 1


def test_forged_signatures_on_the_update_topics_share_one_limit_and_past_it_nothing_is_verified():
    # review M5: update/offer, update/config and update/commission each cost a P-256 verify
    # in the MQTT handler; the failed ones are counted together (as envelope_sig does per kid)
    from binascii import unhexlify
    from ppmid.update import manifest as M
    from ppmid.relay import commission_order as O
    from ppmid.relay import users_update as UU
    import commission_vectors as CV
    import users_vectors as UV
    root = _setup()
    now = fresh_signature_limits()

    async def go():
        u = _updater(root)
        for i in range(M.FAILS_BURST):
            await u.handle(u.topic + "/offer", signed_offer("wrong-key", "w%d" % i))
            assert u.client.last()["error"]["code"] == E_UPDATE_SIGNATURE, u.client.last()
        # a good offer is refused unverified now (it would download if it were verified)
        await u.handle(u.topic + "/offer", signed_offer("real", "o1"))
        st = u.client.last()
        assert st["state"] == "refused" and st["id"] == "o1" and st["error"]["code"] == "E_RATE", st
        assert "the next is checked in" in st["error"]["message"], st
        # the users update and the commission order share the count: refused E_RATE too
        for check, (text, sig) in ((UU.check_signature, UV.SIGNED["rotate"]),
                                   (O.verify, CV.SIGNED["first"])):
            args = (PUBLIC, text, unhexlify(sig)) if check is UU.check_signature else (text, unhexlify(sig), PUBLIC)
            try:
                check(*args)
            except Exception as exc:  # noqa: BLE001 - the code is what counts
                assert exc.code == "E_RATE", exc
            else:
                raise AssertionError("verified past the limit")
        now[0] += int(1000 / M.FAILS_PER_S) - 1000
        await u.handle(u.topic + "/offer", signed_offer("real", "o2"))
        assert u.client.last()["error"]["code"] == "E_RATE"
        now[0] += 1000  # a check regained: the good offer is verified and downloads
        await u.handle(u.topic + "/offer", signed_offer("real", "o3"))
        st = u.client.last()
        assert st["state"] == "downloading" and st["id"] == "o3", st
    asyncio.run(go())


def test_an_expired_manifest_and_an_unset_clock_are_refused_with_their_codes():
    # review M4: the offer's expiry is checked on the relay's clock (SNTP or a kept RTC)
    class _Clock:
        def __init__(self, t, set_):
            self.t, self.set_ = t, set_

        def time(self):
            return self.t

        def is_set(self):
            return self.set_

    root = _setup()

    async def go():
        relay = _Relay()
        u = _updater(root, relay)
        relay.clock = _Clock(1767225600, False)
        await u.handle(u.topic + "/offer", signed_offer("real", "c1"))
        a = u.client.last()
        relay.clock = _Clock(1767225600, True)
        await u.handle(u.topic + "/offer", signed_offer("expired", "c2"))
        b = u.client.last()
        await u.handle(u.topic + "/offer", signed_offer("real", "c3"))
        return a, b, u.client.last()
    a, b, c = asyncio.run(go())
    assert a["state"] == "refused" and a["id"] == "c1" and a["error"]["code"] == "E_CLOCK", a
    assert b["state"] == "refused" and b["id"] == "c2" and b["error"]["code"] == "E_UPDATE_EXPIRED", b
    assert c["state"] == "downloading" and c["id"] == "c3", c


def test_once_the_new_set_is_pointed_at_the_board_resets_even_if_the_status_cannot_go_out():
    # putting the pointer back after this would leave an image set to boot with no
    # probation: the switch's guard stops at the pointer
    root = _setup()

    async def go():
        u = _updater(root, _Relay())
        await u.handle(u.topic + "/offer", signed_offer("real", "o1"))
        publish = u.client.publish

        async def failing(topic, payload, *a):
            if b'"switching"' in payload:
                raise OSError(104)
            return await publish(topic, payload, *a)
        u.client.publish = failing
        await _serve(u)
        await _settle()
        return u
    u = asyncio.run(go())
    assert u.board.resets == 1 and slots.state(root)["probation"]["boots"] == 0
    assert slots.state(root)["version"] == "0.2.0"
