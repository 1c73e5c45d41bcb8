"""Host-side emulator of the board's Zigbee module: an EFR32 NCP (ASH + EZSP) joined to a
HAN whose coordinator is an emulated Communications Hub with an ESME and a GSME behind it.
`ppmid ncp-emulator` runs it on a pty; tests use NcpEmulator directly. See docs/zigbee.md."""
from host_tools import mpcompat

mpcompat.install()

from .emulator import NcpEmulator  # noqa: E402
from .ncp import Faults  # noqa: E402

__all__ = ["NcpEmulator", "Faults"]
