"""PN532 frame layer for the emulator (host side; independent of firmware/ppmid/nfc)."""

ACK = bytes.fromhex("0000ff00ff00")
NACK = bytes.fromhex("0000ffff0000")
ERROR = bytes.fromhex("0000ff01ff7f8100")


def encode_frame(tfi, payload):
    body = bytes([tfi]) + bytes(payload)
    if len(body) < 256:
        head = bytes([0, 0, 0xFF, len(body), (0x100 - len(body)) & 0xFF])
    else:
        hi, lo = divmod(len(body), 256)
        head = bytes([0, 0, 0xFF, 0xFF, 0xFF, hi, lo, (0x100 - hi - lo) & 0xFF])
    return head + body + bytes([(0x100 - sum(body)) & 0xFF, 0])


class Parser:
    """Incremental parser. feed(bytes) -> list of events:
    ("ack",), ("nack",), ("frame", tfi, payload), ("bad", reason)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        events = []
        while True:
            start = self.buf.find(b"\x00\xff")
            if start < 0:
                # keep a lone trailing zero, drop the rest
                self.buf = self.buf[-1:] if self.buf[-1:] == b"\x00" else bytearray()
                return events
            del self.buf[:start]
            b = self.buf
            if len(b) < 4:
                return events
            if b[2] == 0 and b[3] == 0xFF:
                events.append(("ack",))
                del b[:4]
                continue
            if b[2] == 0xFF and b[3] == 0:
                events.append(("nack",))
                del b[:4]
                continue
            if b[2] == 0xFF and b[3] == 0xFF:
                if len(b) < 7:
                    return events
                length = b[4] * 256 + b[5]
                if (b[4] + b[5] + b[6]) % 256 != 0:
                    events.append(("bad", "length checksum"))
                    del b[:2]
                    continue
                body_at = 7
            else:
                length = b[2]
                if (b[2] + b[3]) % 256 != 0:
                    events.append(("bad", "length checksum"))
                    del b[:2]
                    continue
                body_at = 4
            if len(b) < body_at + length + 1:
                return events
            body = bytes(b[body_at:body_at + length])
            dcs = b[body_at + length]
            del b[:body_at + length + 1]
            if (sum(body) + dcs) % 256 != 0 or not body:
                events.append(("bad", "data checksum"))
                continue
            events.append(("frame", body[0], body[1:]))
