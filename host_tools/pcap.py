"""Captures of GBCS traffic for Wireshark: a small pcapng writer (docs/captures.md).

Every packet is an exported-PDU record (link type 252, WIRESHARK_UPPER_PDU): a few TLVs
in front of the payload name the Wireshark dissector that reads it, so `tshark -r FILE`
decodes a GBCS message with its `gbcs_message` dissector (and a JSON status with `json`)
with no preference or user link type to set. Direction goes in the packet's epb_flags
(inbound/outbound as seen from the PPMID gateway) and, with the road and anything else
worth knowing, in the packet comment.

    with PcapWriter("run.pcapng") as cap:
        cap.gbcs(msg_bytes, t=time.time(), outbound=True, comment="PPMID -> CH")

The TLV tag values are those of Wireshark's epan/exported_pdu.h (a fact of the format):
12 = dissector name, 33 = protocol column text, 0 = end of options; tag and length are
16-bit big-endian; string values are NUL-padded to 4 bytes, the padding counted in the
length.
"""
import struct
import threading
import time

LINKTYPE_WIRESHARK_UPPER_PDU = 252

_EXP_PDU_TAG_END_OF_OPT = 0
_EXP_PDU_TAG_DISSECTOR_NAME = 12
_EXP_PDU_TAG_COL_PROT_TEXT = 33

_BLOCK_SHB = 0x0A0D0D0A
_BLOCK_IDB = 0x00000001
_BLOCK_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END = 0
_OPT_COMMENT = 1
_OPT_SHB_USERAPPL = 4
_OPT_IF_NAME = 2
_OPT_EPB_FLAGS = 2
_EPB_INBOUND = 1
_EPB_OUTBOUND = 2

DISSECTOR_GBCS = "gbcs_message"   # a whole GBCS message (or one GBT block of it)
DISSECTOR_JSON = "json"           # a status/response envelope as MQTT carries it


class PcapError(Exception):
    code = "E_PCAP"


def _pad4(b):
    return b + b"\0" * (-len(b) % 4)


def _options(opts):
    """pcapng options [(code, bytes)] + opt_endofopt; b"" when there are none."""
    if not opts:
        return b""
    out = b"".join(struct.pack("<HH", code, len(v)) + _pad4(v) for code, v in opts)
    return out + struct.pack("<HH", _OPT_END, 0)


def _block(btype, body):
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def _tlv(tag, value):
    # the NUL padding counts in the length (readers step by the length alone; a string
    # value may end in NULs, exported_pdu.h)
    value = _pad4(value)
    return struct.pack(">HH", tag, len(value)) + value


def exported_pdu(dissector, payload, protocol=None):
    """The exported-PDU record that hands `payload` to Wireshark's dissector `dissector`."""
    head = _tlv(_EXP_PDU_TAG_DISSECTOR_NAME, dissector.encode())
    if protocol:
        head += _tlv(_EXP_PDU_TAG_COL_PROT_TEXT, protocol.encode())
    return head + struct.pack(">HH", _EXP_PDU_TAG_END_OF_OPT, 0) + bytes(payload)


class PcapWriter:
    """Writes one pcapng section with one interface (exported PDUs) to a path or a binary
    file. Each packet is flushed at once: a capture of a run that is killed stays readable
    up to its last whole packet. Threads may share one writer (the HAN tap and the MQTT
    tap of `ppmid emulate` do): each packet is one locked write."""

    def __init__(self, path_or_file, application="ppmid host tools"):
        if hasattr(path_or_file, "write"):
            self._f, self._own = path_or_file, False
        else:
            try:
                self._f = open(path_or_file, "wb")
            except OSError as exc:
                raise PcapError("cannot write capture %s: %s" % (path_or_file, exc.strerror or exc))
            self._own = True
        self.count = 0
        self._lock = threading.Lock()
        shb = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + _options([(_OPT_SHB_USERAPPL, application.encode())])
        idb = struct.pack("<HHI", LINKTYPE_WIRESHARK_UPPER_PDU, 0, 0) + _options([(_OPT_IF_NAME, b"gbcs")])
        self._write(_block(_BLOCK_SHB, shb) + _block(_BLOCK_IDB, idb))

    def _write(self, data):
        with self._lock:
            if self._f is None:
                raise PcapError("the capture is closed")
            self._f.write(data)
            self._f.flush()

    def packet(self, dissector, payload, t=None, outbound=None, comment=None, protocol=None):
        """One packet for `dissector`; t in seconds since the epoch (now if None);
        outbound True/False sets the direction flag (None: unknown)."""
        data = exported_pdu(dissector, payload, protocol)
        us = int(round((time.time() if t is None else t) * 1e6))
        opts = []
        if comment:
            opts.append((_OPT_COMMENT, comment.encode("utf-8")))
        if outbound is not None:
            opts.append((_OPT_EPB_FLAGS, struct.pack("<I", _EPB_OUTBOUND if outbound else _EPB_INBOUND)))
        body = struct.pack("<IIIII", 0, us >> 32, us & 0xFFFFFFFF, len(data), len(data)) + _pad4(data) + _options(opts)
        self._write(_block(_BLOCK_EPB, body))
        self.count += 1

    def gbcs(self, msg, t=None, outbound=None, comment=None):
        self.packet(DISSECTOR_GBCS, msg, t, outbound, comment)

    def json(self, text, t=None, outbound=None, comment=None):
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.packet(DISSECTOR_JSON, text, t, outbound, comment, protocol="PPMID/MQTT")

    def close(self):
        with self._lock:
            if self._own and self._f is not None:
                self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
