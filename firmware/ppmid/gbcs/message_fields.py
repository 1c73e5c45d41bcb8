# The fields of a decoded GBCS message that the gateway never reads: what host tools print
# and tests check (content type and content, signature, date-time, security and block
# control, the other-information's optional fields; a GBT block's fields, from
# ppmid.gbcs.reassembly). Each is a function of the Message,
# read as a property of it (msg.content_type): Message.__getattr__ loads this module at
# the first such read, so the running app does not hold this code (docs/memory.md).
from micropython import const

from ppmid.gbcs.message import CRA_NAMES, MAC_LEN, _counter
# a GBT block's fields: the gateway's reassembly reads them, where they are
from ppmid.gbcs.reassembly import last_block, block_number, block_ack, block_data, gbt_tag_at  # noqa: F401

# what Message.__getattr__ hands to this module; any other name stays an AttributeError
FIELDS = ("cra_name", "date_time", "supplementary_remote_party_id", "supplementary_remote_party_counter",
          "supplementary_originator_counter", "certificate", "content", "content_len", "content_type",
          "signature", "mac", "security_control", "block_control", "_l",
          "last_block", "block_number", "block_ack", "block_data", "form")

# the three top-level forms (docs/gbcs.md; ppmid.gbcs.message decodes them), as msg.form says
FORM_MAC_SIGNED = "mac+signed"  # DD 00: MAC header + General-Signing message + 12-byte MAC
FORM_SIGNED = "signed"          # DF: General-Signing message alone
FORM_GBT = "gbt"                # DD 09: routing header + General Block Transfer block

CONTENT_GBZ = "gbz"
CONTENT_DLMS_REQUEST = "dlms-request"
CONTENT_DLMS_RESPONSE = "dlms-response"
CONTENT_DLMS_NOTIFICATION = "dlms-notification"
CONTENT_ASN1 = "asn1"

_DATE_TIME_LEN = const(12)  # as ppmid.gbcs.message checks it


_FORMS = (FORM_MAC_SIGNED, FORM_SIGNED, FORM_GBT)  # by the form index in Message._k


def form(m):
    return _FORMS[m._k & 3]


def cra_name(m):
    return CRA_NAMES[m.cra]


def date_time(m):
    t = m._t
    if m.buf[t + 28] == 0:
        return None
    return m.buf[t + 29:t + 29 + _DATE_TIME_LEN]


# optional other-information fields (General-Signing forms)
def _oi_field(m, index, n):
    oil = m._oil()
    if oil < 2 + 8 * index + n or n <= 0:
        return None
    p = m._code_pos() + 2 + 8 * index
    return m.buf[p:p + n]


def supplementary_remote_party_id(m):
    return _oi_field(m, 0, 8)


def supplementary_remote_party_counter(m):
    f = _oi_field(m, 1, 8)
    return None if f is None else _counter(f, 0)


def supplementary_originator_counter(m):
    f = _oi_field(m, 2, 8)
    return None if f is None else _counter(f, 0)


def certificate(m):
    return _oi_field(m, 3, m._oil() - 26)


# ---- General-Signing content ----
def content(m):
    c = m._k >> 8
    return m.buf[c:c + m._n]


def content_len(m):
    return m._n


def content_type(m):
    if m.is_gbt:
        return None
    b = m.buf
    c = m._k >> 8
    first = b[c]
    if first == 0x01 and m._n >= 2 and b[c + 1] == 0x09:
        return CONTENT_GBZ
    if first == 0xD9:
        return CONTENT_DLMS_REQUEST
    if first == 0xDA:
        return CONTENT_DLMS_RESPONSE
    if first == 0x0F:
        return CONTENT_DLMS_NOTIFICATION
    return CONTENT_ASN1


def signature(m):
    """None when the field is absent (pre-command); an empty view when its length is 0."""
    s = m._sig_pos()
    if s < 0:
        return None
    return m.buf[s:s + m.buf[s - 1]]


def mac(m):
    """The 12-byte MAC of the MAC-signed form; None for the others."""
    if m.form != FORM_MAC_SIGNED:
        return None
    return m.buf[len(m.buf) - MAC_LEN:]


# ---- GBT block (FORM_GBT only; None otherwise) ----
def security_control(m):
    h = gbt_tag_at(m)
    if m.is_gbt:
        return m.buf[h - 5]
    return m.buf[h - 6] if m.form == FORM_MAC_SIGNED else None


def block_control(m):
    return m.buf[gbt_tag_at(m) + 1] if m.is_gbt else None


def _l(m):
    # (transaction-id pos, date-time len, code pos, other-info len, content pos,
    #  content len, signature pos or -1, signature len, MAC pos or -1, GBT tag pos or -1)
    # for tests and tools; the properties compute what they need directly.
    s = m._sig_pos()
    return (m._t, m.buf[m._t + 28], m._code_pos(), m._oil(), m._k >> 8, m._n,
            s, 0 if s < 0 else m.buf[s - 1], len(m.buf) - MAC_LEN if m.form == FORM_MAC_SIGNED else -1,
            gbt_tag_at(m) if m.is_gbt else -1)
