"""nfcpy (an independent PN532 host stack) drives the emulated PN532 (issue #15): it opens
the chip through a /dev name, senses NTAG213/215/216 (told apart by GET_VERSION), a Type 4
tag and the phone as ISO-DEP targets, and reads the NDEF command record unchanged. nfcpy
runs ISO-DEP and the type 2 CRC itself over InCommunicateThru, so this exercises the
emulator's raw RF layer, its register map and CRC_A handling, not only InDataExchange."""
import logging
import os
import secrets

import pytest

from conftest import setup_reference  # noqa: E402

nfc = setup_reference("nfc")
import ndef  # noqa: E402,F401  (ndeflib, which nfcpy needs; a dependency of ppmid)

from nfc.clf.device import Device as NfcpyDevice  # noqa: E402
from nfc.tag.tt4 import Type4ATag  # noqa: E402

from host_tools.pn532_emulator.chip import PN532Emulator, crc_a  # noqa: E402
from host_tools.pn532_emulator.targets import (  # noqa: E402
    PhoneApp, Type2Tag, Type4Tag, ndef_mime_message)

pytestmark = pytest.mark.timeout(60)

ENVELOPE = bytes((i * 7 + 3) & 0xFF for i in range(600))   # stands for a command envelope


@pytest.fixture
def emu():
    if not os.access("/dev", os.W_OK):
        pytest.skip("needs a writable /dev for the link nfcpy opens")
    e, slave = PN532Emulator.on_new_pty()
    e.start()
    # nfcpy opens only names listed in /dev ("tty:NAME:pn532" -> /dev/NAME, NAME of
    # letters, digits and '-'); a unique name keeps parallel runs apart
    name = "ttyPN532EMU-%d-%s" % (os.getpid(), secrets.token_hex(3))
    os.symlink(slave, "/dev/" + name)
    e.nfcpy_path = "tty:%s:pn532" % name
    try:
        yield e
    finally:
        os.unlink("/dev/" + name)
        e.stop()
    assert e.errors == []


@pytest.fixture
def clf(emu):
    c = nfc.ContactlessFrontend(emu.nfcpy_path)
    try:
        yield c
    finally:
        c.close()


def connect(clf):
    return clf.connect(rdwr={"on-connect": lambda tag: False, "iterations": 5, "interval": 0.05})


def test_nfcpy_opens_and_closes_the_chip(emu):
    c = nfc.ContactlessFrontend(emu.nfcpy_path)
    codes = {code for code, _ in emu.commands}
    # Diagnose line test, SetParameters, RFConfiguration, GetFirmwareVersion, SAMConfiguration
    assert {0x00, 0x02, 0x12, 0x14, 0x32} <= codes
    assert emu.baud == 921600          # SetSerialBaudRate: a pty takes any rate
    assert emu.params == 0x00          # no automatic RATS: nfcpy runs ISO-DEP itself
    c.close()
    assert emu.power_downs == 1 and emu.baud == 115200


@pytest.mark.parametrize("model, product", [
    ("ntag213", "NXP NTAG213"), ("ntag215", "NXP NTAG215"), ("ntag216", "NXP NTAG216")])
def test_nfcpy_reads_ntag(emu, clf, model, product):
    msg = ndef_mime_message(ENVELOPE[:100])
    tag_ = Type2Tag(msg, model=model)
    emu.place(tag_)
    tag = connect(clf)
    assert tag.product == product
    assert tag.ndef is not None and bytes(tag.ndef.octets) == msg
    rec = tag.ndef.records[0]
    assert rec.type == "application/vnd.ppmid.cmd" and bytes(rec.data) == ENVELOPE[:100]
    # nfcpy talked raw frames: GET_VERSION and READs, with the chip's RX CRC switched off
    assert b"\x60" in tag_.frames and any(f[0] == 0x30 for f in tag_.frames)
    assert not emu.registers[0x6303] & 0x80


def test_nfcpy_reads_a_large_ndef_from_an_ntag216(emu, clf):
    msg = ndef_mime_message(ENVELOPE)
    emu.place(Type2Tag(msg))
    tag = connect(clf)
    assert tag.product == "NXP NTAG216" and bytes(tag.ndef.octets) == msg


def test_nfcpy_reads_a_type4_tag(emu, clf):
    msg = ndef_mime_message(ENVELOPE)
    tag_ = Type4Tag(msg)
    emu.place(tag_)
    tag = connect(clf)
    assert isinstance(tag, Type4ATag)
    assert bytes(tag.ndef.octets) == msg
    assert bytes(tag.ndef.records[0].data) == ENVELOPE
    # the SELECT of the NDEF application came through nfcpy's own ISO-DEP
    assert any(a[:2] == b"\x00\xa4" for a in tag_.apdus)


def test_nfcpy_talks_to_the_phone_as_iso_dep(emu, clf):
    phone = PhoneApp(envelope=ENVELOPE, id="c-7")
    emu.place(phone)
    tag = connect(clf)
    assert isinstance(tag, Type4ATag)
    assert tag.ndef is None            # the phone serves the PPMID AID, not NDEF
    hello = tag.send_apdu(0x00, 0xA4, 0x04, 0x00, PhoneApp.AID)
    assert hello[:2] == b"\x01\x01" and hello.endswith(b"c-7")
    # 256 data bytes + SW: more than one ISO-DEP frame (FSD 256), so the phone chains
    got = tag.send_apdu(0x80, 0x10, 0, 0, bytes(4), mrl=256)
    assert bytes(got) == ENVELOPE[:256]
    got = tag.send_apdu(0x80, 0x10, 0, 0, (256).to_bytes(4, "big"), mrl=256)
    assert bytes(got) == ENVELOPE[256:512]


def test_crc_a_matches_nfcpy():
    for data in (b"", b"\x30\x04", b"\x60", ENVELOPE[:77]):
        assert bytes(NfcpyDevice.add_crc_a(bytearray(data))[-2:]) == crc_a(data)


def test_in_communicate_thru_with_the_chips_crc_off(emu, clf):
    tag_ = Type2Tag(ndef_mime_message(b"crc"), model="ntag213")
    emu.place(tag_)
    assert connect(clf) is not None
    chip = clf.device.chipset
    chip.write_register(("CIU_TxMode", 0x00), ("CIU_RxMode", 0x00))   # CRC off both ways
    rsp = chip.in_communicate_thru(bytearray(b"\x30\x00" + crc_a(b"\x30\x00")), 0.1)
    assert bytes(rsp) == tag_.memory[:16] + crc_a(tag_.memory[:16])
    # a frame with a wrong CRC_A is ignored by the tag: the chip times out (status 01)
    with pytest.raises(chip.Error) as err:
        chip.in_communicate_thru(bytearray(b"\x30\x00\x00\x00"), 0.1)
    assert err.value.errno == 0x01
    # FAST_READ of pages 0-7 and a NAK (4-bit, one byte) for a page past the end
    rsp = chip.in_communicate_thru(bytearray(b"\x3a\x00\x07" + crc_a(b"\x3a\x00\x07")), 0.1)
    assert bytes(rsp[:-2]) == tag_.memory[:32]
    rsp = chip.in_communicate_thru(bytearray(b"\x30\xf0" + crc_a(b"\x30\xf0")), 0.1)
    assert bytes(rsp) == b"\x00"


def test_nfcpy_survives_a_tag_removed_mid_read(emu, clf, caplog):
    caplog.set_level(logging.CRITICAL, logger="nfc")
    emu.place(Type2Tag(ndef_mime_message(ENVELOPE), leave_after=6))
    tag = connect(clf)
    # gone before the NDEF message was read: nfcpy finds no (complete) NDEF, no crash
    assert tag is None or tag.ndef is None
    emu.place(Type2Tag(ndef_mime_message(b"again")))
    tag = connect(clf)
    assert bytes(tag.ndef.records[0].data) == b"again"
