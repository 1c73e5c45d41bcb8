# The NFC polling loop: every `idle_ms` ask the PN532 for one type A target (activation
# retries are bounded, so the answer comes in a few ms), and run one session with it:
# a phone running the PPMID app, a Type 4 tag or an NTAG21x. All waiting is on asyncio;
# the Zigbee and MQTT tasks run between every frame.
#
# The relay is injected as `intake` (docs/nfc.md, "Contract with the relay"):
#   await intake.accept(envelope, via)   via "nfc-phone" | "nfc-tag"; returns once the
#                                        command is durably journaled, raises PpmidError
#                                        (with its code) when it is refused
#   intake.result(id) -> None while pending, else {"status", "gbcs", "error"}
#   intake.delivered(id, via)            optional: the phone has the result
import gc
import asyncio

from ppmid.errors import PpmidError
from ppmid.nfc import phone, tag
from ppmid.nfc.apdu import transceive, select_aid, SW_OK
from ppmid.nfc.errors import NfcError, E_NFC_AID
from ppmid.nfc.pn532 import REINIT_FIRST_MS, REINIT_MAX_MS
from ppmid.clock import sleep_ms

# The NFC settings and their checks live with the rest of the gateway config. Only its
# "nfc" defaults (a small dict) are kept: ppmid.config is boot-only (the app drops it).
# Loaded after the boot (a reader that answered late: nfc/standby.py) this import would
# bring ppmid.config back for the uptime (~6 KB of 32-bit heap): dropped again then.
import sys
_config_loaded = "ppmid.config" in sys.modules
from ppmid import config as _C
DEFAULTS = _C.DEFAULTS["nfc"]
del _C
if not _config_loaded:
    from ppmid.modules import unload
    unload("ppmid.config", "ppmid.modules")
    unload = None
del _config_loaded


def settings(cfg):
    """NFC settings from the gateway config's optional "nfc" object, checked (ConfigError,
    code E_CONFIG)."""
    from ppmid.config import nfc_settings
    return nfc_settings((cfg or {}).get("nfc"))


class NfcService:
    def __init__(self, drv, intake, max_gbcs=8192, log=None, stats=None, led=None, **kw):
        self.drv = drv
        self.intake = intake
        self.max_gbcs = max_gbcs
        self.cfg = dict(DEFAULTS)
        self.cfg.update(kw)
        self.log = log
        self.scratch = bytearray(264)
        self.ready = False
        self.version = None
        self._last_uid = None
        # the board's status LED (on()/off()), or None: it shows each tap's outcome, the
        # only answer a tag's holder gets (a tag is read, never written back)
        self.led = led
        self._showing = False
        # `stats`: a dict to count in (the app publishes it in info), else a new one
        self.stats = stats if stats is not None else {}
        self.stats.update({"polls": 0, "sessions": 0, "relayed": 0, "delivered": 0, "late": 0,
                           "rejected": 0, "gone": 0, "chip_errors": 0, "last_code": None,
                           "faults": 0, "memory_errors": 0, "last_fault": None})

    def _note(self, text):
        if self.log:
            self.log("nfc: " + text)

    async def start(self):
        self.version = await self.drv.begin()
        self.ready = True
        self._note("PN532 v%d.%d ready" % (self.version[1], self.version[2]))

    async def run(self):
        """Forever: keep the PN532 up and poll. This is the NFC road's supervisor: nothing
        but a cancel ends it. A chip that does not answer, and any other exception (an
        OSError from the UART or I2C bus, a bug in a session), is counted, logged and
        followed by a back-off (1 s doubling to 30 s, reset by a clean poll) and a
        re-initialisation of the PN532. A MemoryError drops the tap's buffers (they died
        with the session's frames), collects and polls again after the usual idle wait:
        the next tap may fit."""
        backoff = REINIT_FIRST_MS
        while True:
            try:
                if not self.ready:
                    await self.start()
                await self.poll_once()
                backoff = REINIT_FIRST_MS
            except MemoryError:
                self.ready = False   # the session was cut short: start the chip afresh
                self._fault("MemoryError", "memory_errors", "the tap's buffers dropped")
                gc.collect()   # then the idle wait below, never a busy loop
            except Exception as e:   # CancelledError is no Exception: a cancel still ends us
                self.ready = False
                if isinstance(e, PpmidError):
                    self.stats["chip_errors"] += 1
                    self._note("PN532 not ready (%s); retry in %d ms" % (e, backoff))
                else:
                    self._fault(repr(e), "faults", "PN532 re-initialised in %d ms" % backoff)
                e = None
                await sleep_ms(backoff)
                backoff = min(backoff * 2, REINIT_MAX_MS)
                continue
            await sleep_ms(self.cfg["idle_ms"])

    def _fault(self, what, counter, then):
        self.stats[counter] += 1
        self.stats["last_fault"] = what
        self._note("fault: %s; %s" % (what, then))

    async def poll_once(self):
        """One poll; returns the session outcome dict, or None when no new target."""
        self.stats["polls"] += 1
        try:
            target = await self.drv.in_list_passive_target()
        except PpmidError as e:
            self.stats["chip_errors"] += 1
            self.ready = False
            self._note("poll failed: %s" % e)
            return None
        if target is None:
            self._last_uid = None
            return None
        if target.uid == self._last_uid:
            await self._release(target)  # same card still in the field: already handled
            return None
        self._last_uid = target.uid
        self.stats["sessions"] += 1
        try:
            outcome = await self._session(target)
        except PpmidError as e:
            outcome = {"outcome": "gone" if e.code in phone.LINK_ERRORS else "rejected",
                       "id": None, "code": e.code, "accepted": False}
            self._note("session failed: %s" % e)
        await self._release(target)
        o = outcome["outcome"]
        if outcome.get("memory"):   # a phone session's MemoryError, the phone told (phone.py)
            self._fault("MemoryError", "memory_errors", "the phone told " + outcome["code"])
        if outcome.get("accepted"):
            self.stats["relayed"] += 1
        if o in ("delivered", "late", "rejected", "gone"):
            self.stats[o] += 1
        self.stats["last_code"] = outcome.get("code")
        if self.led is not None and not self._showing:
            self._showing = True
            asyncio.create_task(self._show(bool(outcome.get("accepted"))))
        return outcome

    async def _show(self, accepted):
        """One long blink: taken (journaled, on its way to the meter). Three short: refused,
        or the read failed (try again). Beside the poll loop, which it never holds up."""
        try:
            for ms in ((800,) if accepted else (150, 150, 150)):
                self.led.on()
                await sleep_ms(ms)
                self.led.off()
                await sleep_ms(150)
        except Exception as e:   # an LED that fails is no reason to lose the road
            self._note("status LED: %r" % (e,))
        finally:
            self._showing = False

    async def _release(self, target):
        try:
            await self.drv.in_release(target.tg)
        except PpmidError:
            pass

    async def _session(self, target):
        drv = self.drv
        tg = target.tg
        rx = self.scratch
        if target.iso_dep():
            sw, n = await transceive(drv, tg, select_aid(phone.AID), rx)
            if sw == SW_OK:
                hello = bytes(rx[:n])
                s = phone.PhoneSession(drv, tg, self.intake, self.max_gbcs, self.cfg["chunk"],
                                       self.cfg["session_s"] * 1000, self.cfg["poll_ms"],
                                       self.cfg["keepalive_ms"], rx)
                return await s.run(hello)
            sw, n = await transceive(drv, tg, select_aid(tag.NDEF_AID), rx)
            if sw != SW_OK:
                raise NfcError(E_NFC_AID, "target is neither the PPMID app nor an NDEF tag")
            msg = await tag.read_type4(drv, tg, rx, phone.max_envelope(self.max_gbcs) + 64,
                                       self.cfg["session_s"] * 1000)
        elif target.type2():
            msg = await tag.read_type2(drv, tg, rx, self.cfg["session_s"] * 1000)
        else:
            raise NfcError(E_NFC_AID, "unsupported target (SEL_RES 0x%02X)" % target.sel_res)
        return await self._tag_command(msg)

    async def _tag_command(self, msg):
        env = tag.envelope_from_ndef(msg, self.max_gbcs)
        await self.intake.accept(env, "nfc-tag")
        return {"outcome": "relayed", "id": env.id, "code": None, "accepted": True}

