# The module's side of ASH for the tests that play it: the frames only an NCP sends
# (RSTACK, ERROR) and what a control byte from the host is. The firmware, the host side,
# never builds those frames, so ash.py does not hold them (docs/memory.md, session 9).
from ppmid.zigbee import ash


def rstack(enc, reset_code):
    # RSTACK and ERROR carry the ASH version and a code, not randomised (UG101)
    return bytes(enc.encode(ash.RSTACK, bytes((ash.ASH_VERSION, reset_code))))


def error(enc, code):
    return bytes(enc.encode(ash.ERROR, bytes((ash.ASH_VERSION, code))))


def is_data(control):
    return control & 0x80 == 0


def is_ack(control):
    return control & 0xE0 == 0x80


def is_nak(control):
    return control & 0xE0 == 0xA0
