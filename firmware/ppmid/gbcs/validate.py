# Relay checks on a GBCS command, in the clear: the gateway forwards into a home's HAN only a
# well-formed command, addressed to a device on this gateway's HAN, with a message code
# allowed for that device type, whose originator counter is fresh (anti-replay), and that is
# not larger than configured. Error codes: docs/gbcs.md.
import binascii
from micropython import const

from ppmid.gbcs.message import decode, GbcsError, CRA_COMMAND, CRA_NAMES
from ppmid.errors import E_TOO_LARGE  # larger than limits.max_gbcs

E_FORM = "E_FORM"                      # a GBT block: reassemble first
E_NOT_COMMAND = "E_NOT_COMMAND"        # CRA flag is not 01 (command)
E_PRECOMMAND = "E_PRECOMMAND"          # unsigned: no signature field, or an empty one without a MAC
E_UNKNOWN_TARGET = "E_UNKNOWN_TARGET"  # recipient not on this gateway's HAN device list
E_NOT_ALLOWED = "E_NOT_ALLOWED"        # message code not allowed for the recipient's type
E_REPLAY = "E_REPLAY"                  # originator counter not above the last accepted one
E_SECURITY_CONTROL = "E_SECURITY_CONTROL"  # the MAC header's security control is not 0x11

# The refusals' sentences, by their index in ppmid.gbcs.validate_errors.SENTENCES (the text)
_S_TOO_LARGE = const(0)
_S_FORM = const(1)
_S_NOT_COMMAND = const(2)
_S_PRECOMMAND = const(3)
_S_UNKNOWN_TARGET = const(4)
_S_NOT_ALLOWED = const(5)
_S_REPLAY = const(6)
_S_SECURITY_CONTROL = const(7)
_S_UNSIGNED = const(8)


def _refuse(code, key, arg=None):
    # key: the sentence's _S_... name; its text is ppmid.gbcs.validate_errors', loaded for the
    # refusal and dropped again (as str constants here the sentences held ~0.6 KB of heap)
    from ppmid.modules import sentence
    return GbcsError(code, sentence("ppmid.gbcs.validate_errors", key, arg))


def _key(originator, recipient):
    # the anti-replay counter's store key of one originator -> recipient pair:
    # "<ORIGINATOR>:<RECIPIENT>" (16 upper-case hex digits each); made once per pair (_pair)
    return (binascii.hexlify(originator) + b":" + binascii.hexlify(recipient)).decode().upper()


def admits(codes, code):
    """code in codes, an ascending array of message codes (profiles.han_lists, a sender's
    role: relay/senders.py), by bisection."""
    lo = 0
    hi = len(codes)
    while lo < hi:
        mid = (lo + hi) >> 1
        if codes[mid] < code:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(codes) and codes[lo] == code


class Validator:
    """check(buf) -> Message or GbcsError; commit(msg) once the command is durably accepted.

    config: the validated gateway config dict (ppmid.config.validate): han.devices,
    han.allow, limits.max_gbcs. counter_store: get(key) -> int or None, put(key, int)
    (the relay's journal; host tools and tests: ppmid.gbcs.validate_host's in RAM)."""

    def __init__(self, config, counter_store):
        self.store = counter_store
        self.max_bytes = config["limits"]["max_gbcs"]
        # originator + 08 + recipient (17 bytes as in the message) -> (store key, device type),
        # for pairs whose recipient is on the HAN: one small lookup per message
        self._pairs = {}
        # EUI-64 bytes -> device type; device type -> its message codes (ascending array),
        # narrowed by the command profile; (profile name, number of message codes relayed):
        # info's profile, profile_codes. Built by boot-only code (gbcs/profiles.py)
        from ppmid.gbcs import profiles
        self._devices, self._allow, self.profile = profiles.han_lists(config["han"])

    def _pair(self, b, t):
        # (store key, device type) of the originator/recipient at transaction-id position t,
        # or None when the recipient is not on the HAN (not cached: unknown targets are free)
        pair = bytes(b[t + 11:t + 28])
        hit = self._pairs.get(pair)
        if hit is not None:
            return hit
        dtype = self._devices.get(pair[9:])
        if dtype is None:
            return None
        if len(self._pairs) >= 32:  # bounded; the HAN has a handful of devices
            self._pairs.clear()
        hit = (_key(pair[:8], pair[9:]), dtype)
        self._pairs[pair] = hit
        return hit

    def check(self, buf):
        n = len(buf)
        if n > self.max_bytes:
            raise _refuse(E_TOO_LARGE, _S_TOO_LARGE, (n, self.max_bytes))
        msg = decode(buf)
        if msg.is_gbt:
            raise _refuse(E_FORM, _S_FORM)
        b = msg.buf
        t = msg._t  # transaction-id position
        cra = b[t + 1]
        if cra != CRA_COMMAND:
            raise _refuse(E_NOT_COMMAND, _S_NOT_COMMAND, ("n" if cra == 3 else "", CRA_NAMES[cra]))
        if not msg.has_signature_field:
            raise _refuse(E_PRECOMMAND, _S_PRECOMMAND)
        if b[0] == 0xDD:
            if b[t - 6] != 0x11:
                # the MAC header's security control (6 bytes before the transaction id): 0x11
                # (authenticated, suite 1) on every one in the DCC's corpus; another value tells the
                # device that what follows is not this General-Signing in the clear, so what
                # was checked here is not what it would read (GBT blocks, also DD: refused above)
                raise _refuse(E_SECURITY_CONTROL, _S_SECURITY_CONTROL, b[t - 6])
        elif b[msg._sig_pos() - 1] != 64:
            # General-Signing alone with an empty signature: neither signed nor MACed, no
            # device can authenticate it (a pre-command the DCC has not finished)
            raise _refuse(E_PRECOMMAND, _S_UNSIGNED)
        pair = self._pair(b, t)
        if pair is None:
            raise _refuse(E_UNKNOWN_TARGET, _S_UNKNOWN_TARGET, binascii.hexlify(msg.recipient).decode().upper())
        code = msg.message_code
        if not admits(self._allow[pair[1]], code):
            raise _refuse(E_NOT_ALLOWED, _S_NOT_ALLOWED,
                          (code, pair[1], binascii.hexlify(msg.recipient).decode().upper(), self.profile[0]))
        last = self.store.get(pair[0])
        if last is not None and msg.counter <= last:
            raise _refuse(E_REPLAY, _S_REPLAY, (msg.counter, last))
        return msg

    def commit(self, msg):
        """Record msg's counter as the last accepted for its originator/recipient (never
        lowers it). The relay does not: it commits a command's counter only once the
        device answers it (commit_pair; docs/relay.md "Anti-replay counters")."""
        self.commit_pair(msg.originator, msg.recipient, msg.counter_bytes)

    def commit_pair(self, originator, recipient, counter):
        """Record counter (8 bytes, as on the wire) as the last for the pair originator ->
        recipient (8 bytes each), never lowering it: the relay's, once the recipient has
        answered the command that carried it (a device answers only what it authenticated)."""
        key = _key(originator, recipient)   # one per response: not worth the cache
        counter = int.from_bytes(counter, "big")
        last = self.store.get(key)
        if last is None or counter > last:
            self.store.put(key, counter)
