"""Host-side PN532 emulator: a PN532 on a pty (HSU framing, paced at the baud rate) with
virtual phones (scripted HCE app speaking the docs/nfc.md protocol) and NFC tags that
tests place and remove. Written independently of the firmware's codec."""
from host_tools.pn532_emulator.chip import PN532Emulator  # noqa: F401
from host_tools.pn532_emulator.targets import (  # noqa: F401
    EchoTarget, PhoneApp, Type2Tag, Type4Tag, ndef_mime_message)
