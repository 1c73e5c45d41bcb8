# Relay checks on a GBCS command, in the clear: the gateway forwards into a home's HAN only a
# well-formed command, addressed to a device on this gateway's HAN, with a message code
# allowed for that device type, whose originator counter is fresh (anti-replay), and that is
# not larger than configured. Error codes: docs/gbcs.md.
import binascii
from ppmid.gbcs.message import decode, GbcsError, FORM_GBT, CRA_COMMAND, CRA_NAMES

E_TOO_LARGE = "E_TOO_LARGE"            # larger than limits.max_gbcs
E_FORM = "E_FORM"                      # a GBT block: reassemble first
E_NOT_COMMAND = "E_NOT_COMMAND"        # CRA flag is not 01 (command)
E_PRECOMMAND = "E_PRECOMMAND"          # no signature field: an unsigned pre-command
E_UNKNOWN_TARGET = "E_UNKNOWN_TARGET"  # recipient not on this gateway's HAN device list
E_NOT_ALLOWED = "E_NOT_ALLOWED"        # message code not allowed for the recipient's type
E_REPLAY = "E_REPLAY"                  # originator counter not above the last accepted one


class MemoryCounterStore:
    """Counter store kept in RAM (host tools, tests). The relay injects a persistent one with
    the same two methods."""

    def __init__(self):
        self._d = {}

    def get(self, key):
        return self._d.get(key)

    def put(self, key, value):
        self._d[key] = value


def counter_key(originator, recipient):
    """Store key for the anti-replay counter of one originator -> recipient pair:
    "<ORIGINATOR>:<RECIPIENT>" (16 upper-case hex digits each)."""
    return _key(originator, recipient)


_HEX = "0123456789ABCDEF"


def _key(originator, recipient):
    out = bytearray(33)
    for i in range(8):
        a = originator[i]
        out[2 * i] = ord(_HEX[a >> 4])
        out[2 * i + 1] = ord(_HEX[a & 15])
        b = recipient[i]
        out[17 + 2 * i] = ord(_HEX[b >> 4])
        out[18 + 2 * i] = ord(_HEX[b & 15])
    out[16] = 0x3A  # ':'
    return str(out, "ascii")


def _same8(b, pos, eui):
    for i in range(8):
        if b[pos + i] != eui[i]:
            return False
    return True


class Validator:
    """check(buf) -> Message or GbcsError; commit(msg) once the command is durably accepted.

    config: the validated gateway config dict (ppmid.config.validate): han.devices,
    han.allow, limits.max_gbcs. counter_store: get(key) -> int or None, put(key, int)."""

    def __init__(self, config, counter_store):
        self.store = counter_store
        self.max_bytes = config["limits"]["max_gbcs"]
        han = config["han"]
        self._devices = []   # [(eui bytes, type)]: compared in place, no per-message key
        for d in han["devices"]:
            self._devices.append((binascii.unhexlify(d["eui"]), d["type"]))
        self._keys = []      # recent (originator, recipient, store key): no per-message key string
        allow = han.get("allow") or {}
        self._allow = {}
        for t in set(d[1] for d in self._devices):
            if t in allow:
                self._allow[t] = set(allow[t])
            else:
                from ppmid.gbcs import codes
                self._allow[t] = codes.commands_for(t)

    def device_type(self, eui):
        return self._find_device(memoryview(bytes(eui)), 0)

    def _find_device(self, b, pos):
        for eui, dtype in self._devices:
            if _same8(b, pos, eui):
                return dtype
        return None

    def _key(self, b, t):
        # store key of the originator (t + 11) / recipient (t + 20) pair, from a small cache
        for orig, recip, key in self._keys:
            if _same8(b, t + 11, orig) and _same8(b, t + 20, recip):
                return key
        key = _key(b[t + 11:t + 19], b[t + 20:t + 28])
        if len(self._keys) >= 16:
            self._keys.pop(0)
        self._keys.append((bytes(b[t + 11:t + 19]), bytes(b[t + 20:t + 28]), key))
        return key

    def allowed(self, device_type):
        return self._allow.get(device_type, ())

    def check(self, buf):
        n = len(buf)
        if n > self.max_bytes:
            raise GbcsError(E_TOO_LARGE, "message is %d bytes; the limit (limits.max_gbcs) is %d" % (n, self.max_bytes))
        msg = decode(buf)
        if msg.form == FORM_GBT:
            raise GbcsError(E_FORM, "a GBT block cannot be relayed on its own; reassemble the message first")
        cra = msg.cra
        if cra != CRA_COMMAND:
            raise GbcsError(E_NOT_COMMAND, "only commands are relayed; this is a%s %s" %
                            ("n" if cra == 3 else "", CRA_NAMES[cra]))
        if not msg.has_signature_field:
            raise GbcsError(E_PRECOMMAND, "message has no signature field: a pre-command, not a command the DCC sent")
        b = msg.buf
        t = msg._h  # transaction-id position (signed forms)
        dtype = self._find_device(b, t + 20)
        if dtype is None:
            raise GbcsError(E_UNKNOWN_TARGET, "recipient %s is not on this gateway's HAN device list" %
                            binascii.hexlify(msg.recipient).decode().upper())
        code = msg.message_code
        if code not in self._allow[dtype]:
            raise GbcsError(E_NOT_ALLOWED, "message code 0x%04X is not allowed for %s %s" %
                            (code, dtype, binascii.hexlify(msg.recipient).decode().upper()))
        last = self.store.get(self._key(b, t))
        if last is not None and msg.counter <= last:
            raise GbcsError(E_REPLAY, "originator counter %d is not above the last accepted (%d) for this "
                            "originator and recipient" % (msg.counter, last))
        return msg

    def commit(self, msg):
        """Record msg's counter as the last accepted for its originator/recipient (never lowers it)."""
        key = self._key(msg.buf, msg._t)
        counter = msg.counter
        last = self.store.get(key)
        if last is None or counter > last:
            self.store.put(key, counter)
