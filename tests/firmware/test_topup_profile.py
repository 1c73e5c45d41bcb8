# mp-heapsize: 320K  (the whole file in one 64-bit interpreter: at 256K, after session 13 grew relay/refusals.py, its loading for a refusal found no 1,280-byte block; the app's own 32-bit figures are the heap32 bench rows)
# han.profile and han.allow bind the UTRN top-up road as they bind GBCS commands (review r2
# R2-6): a top-up at the ESME is GBCS PECS01 (message code 0x0116), so where the ESME's list
# does not hold that code the top-up is refused with the code and sentence of a GBCS command
# of that code, and nothing goes to the meter. The relay runs with the gateway's real
# validator (gbcs/validate.py). CPython and MicroPython.
from test_relay_support import Rig, ESME, PPMID
from test_topup import TopupHan, Meter, ESME_NWK, make, submit
from ppmid import config as C


class ValidatorRig(Rig):
    """Rig with the gateway's own GBCS validator in place of the fake."""

    def boot(self):
        Rig.boot(self)
        from ppmid.gbcs.validate import Validator
        self.validator = self.relay.validator = Validator(self.cfg, self.store)


def _rig(**han):
    han["devices"] = [{"eui": ESME, "type": "ESME", "nwk": ESME_NWK, "endpoint": 9}]
    m = Meter()
    return ValidatorRig(cfg=C.validate({"gateway": PPMID, "han": han}), han=TopupHan(m)), m


async def test_a_profile_or_allow_list_without_pecs01_refuses_top_ups_as_it_refuses_the_gbcs_command():
    for han in ({"profile": "hht"}, {"allow": {"ESME": [0x0059]}}):
        r, m = _rig(**han)
        gbcs = await r.submit("c1", 10, code=0x0116)          # PECS01 as a GBCS command
        assert gbcs["error"] == "E_NOT_ALLOWED", (han, gbcs)
        out = await submit(r, "t1", make(value=250), via="nfc-phone")
        assert out["status"] == "rejected" and (out["error"], out["message"]) == (gbcs["error"], gbcs["message"]), (han, out)
        assert "0x0116" in out["message"] and ESME in out["message"]
        await r.pump()
        assert r.han.zcl == [] and m.credit == 1000 and r.journal.by_id == {}, han
        assert r.relay.result("t1")["error"]["code"] == "E_NOT_ALLOWED"   # a refusal of a proved key


async def test_a_profile_or_allow_list_with_pecs01_lets_top_ups_through():
    for han in ({"profile": "prepay"}, {"allow": {"ESME": [0x0059, 0x0116]}}, {}):
        r, m = _rig(**han)
        assert (await submit(r, "t1", make(value=250)))["status"] == "accepted", han
        await r.pump()
        assert len(r.han.zcl) == 1 and m.credit == 1250, han
        assert r.pub.statuses("t1") == ["accepted", "topped-up"], han
