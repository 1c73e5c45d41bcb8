"""Virtual NFC targets for the PN532 emulator.

PhoneApp is a scripted Android HCE app written from docs/nfc.md (the app-side contract):
it hands a command envelope to the gateway and stores the result the gateway pushes.
Type2Tag is an NTAG213/215/216 (READ, FAST_READ, GET_VERSION, ...); Type4Tag an NFC Forum
Type 4 tag (NDEF application, CC and NDEF files). Every target answers APDUs (`exchange`,
the chip ran ISO-DEP: InDataExchange) and raw frames (`frame`, the host runs ISO-DEP or the
type 2 protocol itself: InCommunicateThru). EchoTarget answers every APDU with a payload of
a requested size (driver tests of InDataExchange chaining).
"""
import struct
import zlib

from host_tools.pn532_emulator.chip import TargetGone

NDEF_AID = bytes.fromhex("D2760000850101")
MIME_CMD = "application/vnd.ppmid.cmd"

SW_OK = b"\x90\x00"


def _sw(code):
    return struct.pack(">H", code)


class Target:
    sens_res = b"\x00\x04"
    sel_res = 0x20
    ats = b"\x78\x80\x70\x02"
    latency = 0.0
    leave_after = None   # APDUs (or frames) after which the target leaves the field: never

    def __init__(self, uid=b"\x08\x12\x34\x56"):
        self.uid = uid
        self.activations = 0
        self.deselects = 0
        self.halted = False
        self.apdus = []

    def activate(self):
        self.activations += 1
        self.halted = False

    def deselect(self):
        self.deselects += 1

    def exchange(self, apdu):
        raise NotImplementedError

    def _received(self, apdu):
        """Record one APDU; TargetGone once more came than leave_after (the phone or tag
        left the field)."""
        self.apdus.append(apdu)
        if self.leave_after is not None and len(self.apdus) > self.leave_after:
            raise TargetGone()

    # ---- the raw RF layer (InCommunicateThru) -----------------------------------------
    # A reader that runs ISO-DEP itself (nfcpy) activates the target at level 3 only and
    # sends RATS, I-, R- and S-blocks through the chip. `frame(data)` answers one frame
    # as the target would: bytes, an int for a 4-bit ACK/NAK, or None for silence.
    # The ISO-DEP side below is the PICC half of ISO/IEC 14443-4 without CID/NAD.
    FSD = (16, 24, 32, 40, 48, 64, 96, 128, 256)

    def level3(self):
        """Activated at level 3 (anticollision + select) without RATS."""
        self.activate()
        self.iso = False

    def level4(self):
        """Activated with RATS done by the chip (InListPassiveTarget, fAutomaticRATS)."""
        self.activate()
        self.iso = True
        self._fsd = 256

    def frame(self, data):
        if not self.ats or self.halted:
            return None
        if not getattr(self, "iso", False):
            if len(data) == 2 and data[0] == 0xE0:
                self.iso = True
                self._fsd = self.FSD[min(data[1] >> 4, 8)]
                self._block = 1   # so that the first I-block's number differs
                self._out = b""
                self._chain = bytearray()
                self._last = None
                return bytes([len(self.ats) + 1]) + self.ats
            return None  # a level-3 target ignores anything but RATS (and HLTA)
        pcb = data[0] if data else 0
        if pcb & 0xC0 == 0x00 and pcb & 0x02:       # I-block
            bn = pcb & 1
            if pcb & 0x0C:
                return None  # CID/NAD: not announced in our ATS, so not ours
            self._chain += data[1:]
            if pcb & 0x10:
                return self._keep(bytes([0xA2 | bn]))
            apdu = bytes(self._chain)
            self._chain = bytearray()
            reply = self.exchange(apdu)
            if reply is None:
                return None
            self._out = bytes(reply)
            return self._next(bn)
        if pcb & 0xE0 == 0xA0:                         # R-block
            bn = pcb & 1
            if pcb & 0x10:                             # R(NAK)
                if self._last is not None and bn == self._block:
                    return self._last
                return bytes([0xA2 | self._block])
            if self._out:                              # R(ACK): next piece of our chain
                return self._next(bn)
            return self._last if bn == self._block else None
        if pcb & 0xF7 == 0xC2:                         # S(DESELECT)
            self.deselect()
            self.iso = False
            self.halted = True
            return bytes([pcb])
        return None

    def _next(self, bn):
        room = self._fsd - 3  # PCB + CRC_A
        piece, self._out = self._out[:room], self._out[room:]
        return self._keep(bytes([(0x12 if self._out else 0x02) | bn]) + piece)

    def _keep(self, block):
        self._block = block[0] & 1
        self._last = block
        return block


class EchoTarget(Target):
    """Replies with `n` bytes when sent `n` as a 2-byte big-endian number; records input."""

    def exchange(self, apdu):
        self.apdus.append(apdu)
        n = struct.unpack(">H", apdu[:2])[0] if len(apdu) >= 2 else 0
        return bytes((i * 31 + len(apdu)) & 0xFF for i in range(n))


class PhoneApp(Target):
    """The PPMID app in HCE mode (docs/nfc.md, "Phone protocol").

    mode "deliver": holds `envelope` (binary form) and receives its result;
    mode "collect": asks for the result of `collect_id` only.
    Faults: aid (what the app registered), crc_lie, total_delta, short_by / long_by (serve
    fewer / more bytes than asked), leave_after (APDU count after which the phone leaves the field),
    hello_id (announce another id), version."""

    AID = bytes.fromhex("F050504D494401")

    def __init__(self, envelope=None, id=None, collect_id=None, aid=None, crc_lie=False,
                 total_delta=0, short_by=0, long_by=0, leave_after=None, hello_id=None, version=1,
                 latency=0.0, uid=b"\x08\xa1\xb2\xc3"):
        super().__init__(uid)
        self.envelope = bytes(envelope) if envelope is not None else None
        self.id = id
        self.collect_id = collect_id
        self.aid = aid if aid is not None else self.AID
        self.crc_lie = crc_lie
        self.total_delta = total_delta
        self.short_by = short_by
        self.long_by = long_by
        self.leave_after = leave_after
        self.hello_id = hello_id
        self.version = version
        self.latency = latency
        self.selected = False
        self.statuses = []     # (sw int, code str, message str)
        self.result = None     # {"status", "gbcs", "code", "message", "committed"}
        self._incoming = None
        self.gets = 0

    def activate(self):
        super().activate()
        self.selected = False

    def deselect(self):
        super().deselect()
        self.selected = False

    def exchange(self, apdu):
        self._received(apdu)
        if len(apdu) < 4:
            return _sw(0x6700)
        cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
        body = apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
        if cla == 0x00 and ins == 0xA4 and p1 == 0x04:
            if body != self.aid:
                self.selected = False
                return _sw(0x6A82)
            self.selected = True
            return self._hello() + SW_OK
        if not self.selected:
            return _sw(0x6985)
        if cla != 0x80:
            return _sw(0x6E00)
        if ins == 0x10:
            return self._get(body, apdu[-1] if len(apdu) > 5 + len(body) else 0)
        if ins == 0x30:
            code, _, message = bytes(body).partition(b"\x00")
            self.statuses.append(((p1 << 8) | p2, code.decode(), message.decode("utf-8", "replace")))
            return SW_OK
        if ins == 0x50:
            return self._result_header(body)
        if ins == 0x52:
            return self._put(body)
        if ins == 0x54:
            return self._commit()
        return _sw(0x6D00)

    # -- deliver: the gateway pulls the envelope -----------------------------------------
    def _hello(self):
        if self.envelope is not None:
            mode, total = 1, len(self.envelope) + self.total_delta
            # a consistent liar: the CRC covers what it announces
            crc = zlib.crc32(self.envelope[:total]) ^ (1 if self.crc_lie else 0)
            ident = self.id
        else:
            mode, total, crc, ident = 2, 0, 0, self.collect_id
        ident = (self.hello_id or ident).encode()
        return struct.pack(">BBIIB", self.version, mode, total, crc, len(ident)) + ident

    def _get(self, body, le):
        if len(body) != 4 or self.envelope is None:
            return _sw(0x6A80)
        self.gets += 1
        offset = struct.unpack(">I", body)[0]
        want = le or 256
        announced = len(self.envelope) + self.total_delta
        if offset >= announced:
            return _sw(0x6B00)
        chunk = self.envelope[offset:offset + want]
        if self.short_by:
            chunk = chunk[:max(0, len(chunk) - self.short_by)]
        if self.long_by:
            chunk += bytes(self.long_by)
        return chunk + SW_OK

    # -- result: the gateway pushes it ------------------------------------------------------
    def _result_header(self, body):
        if len(body) < 10:
            return _sw(0x6700)
        status, length, crc, code_len = struct.unpack(">BIIB", body[:10])
        code = body[10:10 + code_len].decode()
        message = body[10 + code_len:].decode("utf-8", "replace")
        names = {0: "response", 1: "timeout", 2: "failed", 3: "rejected", 4: "topped-up",
                 5: "already-executed"}
        if status not in names:
            return _sw(0x6A80)
        self._incoming = {"status": names[status], "length": length, "crc": crc,
                          "code": code, "message": message, "data": bytearray()}
        return SW_OK

    def _put(self, body):
        inc = self._incoming
        if inc is None or len(body) < 4:
            return _sw(0x6985)
        offset = struct.unpack(">I", body[:4])[0]
        # a repeated PUT (the reader may resend an APDU) rewinds: data from offset is replaced
        if offset > len(inc["data"]) or offset + len(body) - 4 > inc["length"]:
            return _sw(0x6A80)
        del inc["data"][offset:]
        inc["data"] += body[4:]
        return SW_OK

    def _commit(self):
        inc = self._incoming
        if inc is None:
            return _sw(0x6985)
        if len(inc["data"]) != inc["length"] or zlib.crc32(bytes(inc["data"])) != inc["crc"]:
            self._incoming = None
            return _sw(0x6A80)
        self.result = {"status": inc["status"], "gbcs": bytes(inc["data"]) or None,
                       "code": inc["code"], "message": inc["message"]}
        self._incoming = None
        return SW_OK


class Type2Tag(Target):
    """NTAG213/215/216 as the chip answers (NXP NTAG213/215/216 data sheet): the full page
    map (header, user memory, dynamic lock and configuration pages), READ (30: 16 bytes,
    rolling over at the end), FAST_READ (3A), GET_VERSION (60), READ_SIG (3C), WRITE (A2),
    HLTA. An unknown command or a bad address is answered with a 4-bit NAK and sends the
    tag back to idle, as the real one does; it then stays silent until re-selected."""
    sens_res = b"\x00\x44"
    sel_res = 0x00
    ats = b""
    SIZES = {"ntag213": 144, "ntag215": 496, "ntag216": 872}     # NDEF area in the CC
    PAGES = {"ntag213": 45, "ntag215": 135, "ntag216": 231}      # whole memory
    VERSION = {"ntag213": bytes.fromhex("0004040201000F03"),
               "ntag215": bytes.fromhex("0004040201001103"),
               "ntag216": bytes.fromhex("0004040201001303")}
    ACK, NAK = 0x0A, 0x00

    def __init__(self, ndef_message=None, model="ntag216", memory=None,
                 uid=b"\x04\x11\x22\x33\x44\x55\x66", leave_after=None):
        super().__init__(uid)
        size = self.SIZES[model]
        self.model = model
        self.leave_after = leave_after
        self.frames = []       # raw frames received through InCommunicateThru
        if memory is None:
            head = bytes([uid[0], uid[1], uid[2], 0x88 ^ uid[0] ^ uid[1] ^ uid[2]]) + uid[3:7] + \
                bytes([uid[3] ^ uid[4] ^ uid[5] ^ uid[6], 0x48, 0, 0]) + bytes([0xE1, 0x10, size // 8, 0x00])
            msg = ndef_message or b""
            tlv = (bytes([0x03, len(msg)]) if len(msg) < 255 else b"\x03\xff" + struct.pack(">H", len(msg))) + msg + b"\xfe"
            if len(tlv) > size:
                raise ValueError("NDEF message of %d bytes does not fit an %s" % (len(msg), model))
            # user memory past the CC's size, then dynamic lock bytes, CFG0 (AUTH0 = FF: no
            # password), CFG1, PWD (reads as zeros), PACK
            tail = bytes([0, 0, 0, 0xBD]) + bytes([0x04, 0, 0, 0xFF]) + bytes(4) + bytes(4) + bytes(4)
            user = self.PAGES[model] * 4 - 16 - len(tail)
            memory = head + tlv + bytes(user - len(tlv)) + tail
        self.memory = bytes(memory)

    def _gone(self):
        if self.leave_after is not None and len(self.apdus) + len(self.frames) > self.leave_after:
            raise TargetGone()

    def exchange(self, apdu):
        """InDataExchange: the chip handles the CRC; a 4-bit answer comes back as one byte."""
        self.apdus.append(apdu)
        self._gone()
        r = self._command(apdu)
        return bytes([r]) if isinstance(r, int) else r

    def frame(self, data):
        self.frames.append(bytes(data))
        self._gone()
        return self._command(data)

    def _nak(self):
        self.halted = True
        return self.NAK

    def _command(self, c):
        if getattr(self, "halted", False):
            return None
        pages = len(self.memory) // 4
        if len(c) == 2 and c[0] == 0x30:                       # READ
            if c[1] >= pages:
                return self._nak()
            return b"".join(self.memory[4 * ((c[1] + k) % pages):][:4] for k in range(4))
        if len(c) == 3 and c[0] == 0x3A:                       # FAST_READ start end
            if c[1] > c[2] or c[2] >= pages:
                return self._nak()
            return self.memory[4 * c[1]:4 * (c[2] + 1)]
        if len(c) == 1 and c[0] == 0x60:                       # GET_VERSION
            return self.VERSION.get(self.model, self.VERSION["ntag216"])
        if len(c) == 2 and c[0] == 0x3C and c[1] == 0:         # READ_SIG: an unsigned sample
            return bytes(32)
        if len(c) == 6 and c[0] == 0xA2:                       # WRITE one page
            if not 4 <= c[1] < pages - 5:   # header and configuration pages stay as made
                return self._nak()
            m = bytearray(self.memory)
            m[4 * c[1]:4 * c[1] + 4] = c[2:6]
            self.memory = bytes(m)
            return self.ACK
        if len(c) == 2 and c[0] == 0x50 and c[1] == 0:         # HLTA: no answer
            self.halted = True
            return None
        return self._nak()


class Type4Tag(Target):
    """NFC Forum Type 4 tag with one NDEF file (E104) and its CC file (E103)."""

    def __init__(self, ndef_message, mle=0x00F6, uid=b"\x08\x44\x55\x66", leave_after=None):
        super().__init__(uid)
        self.mle = mle
        self.leave_after = leave_after
        self.files = {
            b"\xe1\x03": struct.pack(">HBHHBBHHBB", 15, 0x20, mle, 0x00FF, 0x04, 6, 0xE104,
                                     max(len(ndef_message) + 2, 0x100), 0x00, 0xFF),
            b"\xe1\x04": struct.pack(">H", len(ndef_message)) + bytes(ndef_message),
        }
        self.app = False
        self.current = None

    def activate(self):
        super().activate()
        self.app = False
        self.current = None

    def exchange(self, apdu):
        self._received(apdu)
        if len(apdu) < 4:
            return _sw(0x6700)
        cla, ins, p1, p2 = apdu[:4]
        if cla == 0x00 and ins == 0xA4 and p1 == 0x04:
            self.app = apdu[5:5 + apdu[4]] == NDEF_AID
            return SW_OK if self.app else _sw(0x6A82)
        if cla == 0x00 and ins == 0xA4 and p1 == 0x00 and self.app:
            fid = bytes(apdu[5:7])
            if fid in self.files:
                self.current = fid
                return SW_OK
            return _sw(0x6A82)
        if cla == 0x00 and ins == 0xB0 and self.current:
            off = (p1 << 8) | p2
            le = apdu[4] if len(apdu) > 4 else 0
            data = self.files[self.current]
            if off > len(data):
                return _sw(0x6B00)
            return data[off:off + (le or 256)] + SW_OK
        return _sw(0x6D00)


def ndef_mime_message(payload, mime=MIME_CMD):
    """One-record NDEF message built with ndeflib (independent of the firmware)."""
    import ndef
    return b"".join(ndef.message_encoder([ndef.Record(mime, "", bytes(payload))]))
