# ZCL Smart Energy Key Establishment cluster (0x0800, profile 0x0109): the frames of
# certificate-based key establishment (CBKE) with crypto suite 2 (ECMQV on sect283k1,
# 74-byte implicit certificates, 37-byte compressed public keys). The PPMID is the
# client (initiator), the CH the server (responder). Pure codec, no I/O, no ECC (the ECC
# runs in the NCP: zigbee/ezsp_cbke.py); imported only while commissioning. Layouts:
# docs/zigbee.md "Commissioning".
import struct
from micropython import const

from ppmid.zigbee.tunnel import zcl_header, parse_zcl, FC_SERVER_TO_CLIENT, ZclError

CLUSTER_KEY_ESTABLISHMENT = const(0x0800)
E_KE_FRAME = "E_KE_FRAME"

SUITE_1 = const(0x0001)          # KeyEstablishmentSuite bitmap: CBKE-ECMQV sect163k1
SUITE_2 = const(0x0002)          # CBKE-ECMQV sect283k1 (what GB SMETS2 devices use)
CERT_LEN = const(74)             # suite 2 implicit certificate
PUBLIC_KEY_LEN = const(37)       # suite 2 compressed point
MAC_LEN = const(16)

# command ids: the same in both directions (requests client -> server, responses back)
INITIATE = const(0x00)
EPHEMERAL_DATA = const(0x01)
CONFIRM_KEY = const(0x02)
TERMINATE = const(0x03)
COMMAND_NAMES = ("initiate", "ephemeral_data", "confirm_key", "terminate")

# Terminate Key Establishment status
UNKNOWN_ISSUER = const(0x01)
BAD_KEY_CONFIRM = const(0x02)
BAD_MESSAGE = const(0x03)
NO_RESOURCES = const(0x04)
UNSUPPORTED_SUITE = const(0x05)
INVALID_CERTIFICATE = const(0x06)
TERMINATE_NAMES = {UNKNOWN_ISSUER: "unknown_issuer", BAD_KEY_CONFIRM: "bad_key_confirm",
                   BAD_MESSAGE: "bad_message", NO_RESOURCES: "no_resources",
                   UNSUPPORTED_SUITE: "unsupported_suite", INVALID_CERTIFICATE: "invalid_certificate"}

# suite 2 certificate: type 1, serial 8, curve 1, hash 1, issuer 8, valid from 5,
# valid to 4, subject (the holder's EUI-64, big-endian) 8, key usage 1, public key 37
_CERT_ISSUER = const(11)
_CERT_SUBJECT = const(28)


def _lengths(command):
    return {EPHEMERAL_DATA: PUBLIC_KEY_LEN, CONFIRM_KEY: MAC_LEN}[command]


def initiate(seq, server_to_client, certificate, ephemeral_time, confirm_time, suite=SUITE_2):
    """Initiate Key Establishment request (client) / response (server): suite (u16), the
    ephemeral data and confirm key generate times (u8, seconds: how long the sender may take,
    so how long the other side waits) and the sender's certificate."""
    if len(certificate) != CERT_LEN:
        raise ZclError(E_KE_FRAME, "a suite 2 certificate is %d bytes, not %d" % (CERT_LEN, len(certificate)))
    return (zcl_header(seq, INITIATE, server_to_client)
            + struct.pack("<HBB", suite, ephemeral_time, confirm_time) + bytes(certificate))


def ephemeral_data(seq, server_to_client, public_key):
    if len(public_key) != PUBLIC_KEY_LEN:
        raise ZclError(E_KE_FRAME, "suite 2 ephemeral data is %d bytes, not %d" % (PUBLIC_KEY_LEN, len(public_key)))
    return zcl_header(seq, EPHEMERAL_DATA, server_to_client) + bytes(public_key)


def confirm_key(seq, server_to_client, mac):
    if len(mac) != MAC_LEN:
        raise ZclError(E_KE_FRAME, "a key confirmation MAC is %d bytes, not %d" % (MAC_LEN, len(mac)))
    return zcl_header(seq, CONFIRM_KEY, server_to_client) + bytes(mac)


def terminate(seq, server_to_client, status, wait_time, suite=SUITE_2):
    """Terminate Key Establishment: status (u8), wait time (u8, seconds before trying
    again), suite (u16)."""
    return zcl_header(seq, TERMINATE, server_to_client) + struct.pack("<BBH", status, wait_time, suite)


class KeFrame:
    """A parsed Key Establishment frame. Fields set by command: initiate -> suite,
    ephemeral_time, confirm_time, certificate; ephemeral_data -> public_key; confirm_key
    -> mac; terminate -> status, wait_time, suite."""

    def __init__(self, seq, server_to_client, command):
        self.seq = seq
        self.server_to_client = server_to_client
        self.command = command
        self.suite = self.ephemeral_time = self.confirm_time = None
        self.certificate = self.public_key = self.mac = None
        self.status = self.wait_time = None

    def name(self):
        return COMMAND_NAMES[self.command]


def parse(frame):
    """One received Key Establishment frame -> KeFrame. Raises ZclError(E_KE_FRAME) on a
    global command, a manufacturer-specific one, an unknown id or a wrong length."""
    fc, mfr, seq, cmd, p = parse_zcl(frame)
    if not fc & 0x01 or mfr is not None or cmd > TERMINATE:
        raise ZclError(E_KE_FRAME, "not a Key Establishment command (frame control 0x%02x, id 0x%02x)" % (fc, cmd))
    f = KeFrame(seq, bool(fc & FC_SERVER_TO_CLIENT), cmd)
    want = {INITIATE: 4 + CERT_LEN, TERMINATE: 4}.get(cmd) or _lengths(cmd)
    if len(p) != want:
        raise ZclError(E_KE_FRAME, "Key Establishment %s of %d bytes, expected %d" % (f.name(), len(p), want))
    if cmd == INITIATE:
        f.suite, f.ephemeral_time, f.confirm_time = struct.unpack_from("<HBB", p, 0)
        f.certificate = p[4:]
    elif cmd == EPHEMERAL_DATA:
        f.public_key = p
    elif cmd == CONFIRM_KEY:
        f.mac = p
    else:
        f.status, f.wait_time, f.suite = struct.unpack_from("<BBH", p, 0)
    return f


def cert_subject(certificate):
    """The certificate holder's EUI-64, big-endian (as printed)."""
    return bytes(certificate[_CERT_SUBJECT:_CERT_SUBJECT + 8])


def cert_issuer(certificate):
    return bytes(certificate[_CERT_ISSUER:_CERT_ISSUER + 8])


def make_certificate(serial, issuer, subject, public_key, valid_from=b"\x00" * 5, valid_to=b"\xff" * 4):
    """A suite 2 certificate with the given fields (curve sect283k1 0x0D, hash AES-MMO
    0x08, key usage key agreement 0x88). Used by the emulated module and CH, whose
    certificates are made up (docs/zigbee.md: what is modelled)."""
    c = (b"\x00" + bytes(serial) + b"\x0d\x08" + bytes(issuer) + bytes(valid_from) + bytes(valid_to)
         + bytes(subject) + b"\x88" + bytes(public_key))
    if len(c) != CERT_LEN:
        raise ZclError(E_KE_FRAME, "certificate fields make %d bytes, not %d" % (len(c), CERT_LEN))
    return c
