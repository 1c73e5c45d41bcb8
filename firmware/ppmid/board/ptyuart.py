# A machine.UART stand-in for the emulated board: one end of a host pseudo-terminal, in
# raw mode, used through asyncio streams exactly like a real UART. The host-side module
# emulator (NCP, PN532) holds the other end and paces the bytes at the configured baud.
import asyncio
import termios

# Indices into termios' control characters on Linux. MicroPython's termios has no names.
_VTIME = 5
_VMIN = 6


def _return_what_has_arrived(fd):
    # The unix port's file read loops until it has all n bytes when the fd blocks; a real
    # UART's read returns what has arrived. VMIN=0/VTIME=0 makes a read return at once with
    # what is there (asyncio only reads after poll said the fd is readable).
    attrs = termios.tcgetattr(fd)
    attrs[6][_VMIN] = 0
    attrs[6][_VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class PtyUart:
    def __init__(self, path, baudrate=115200):
        """`path`: the pty's path, or a file already open on it in raw mode (the emulated
        board's ROM opens its UART ptys, which the supervisor made raw, before the flash
        becomes "/"; setting raw mode again would flush bytes already received)."""
        self.baudrate = baudrate
        if isinstance(path, str):
            self.path = path
            self._file = open(path, "r+b")
            termios.setraw(self._file.fileno())
        else:
            self._file = path
            self.path = getattr(path, "name", None)
        _return_what_has_arrived(self._file.fileno())

    # The subset of machine.UART the drivers use.
    def read(self, n=-1):
        return self._file.read(n)

    def readinto(self, buf, n=None):
        return self._file.readinto(buf) if n is None else self._file.readinto(memoryview(buf)[:n])

    def write(self, data):
        return self._file.write(data)

    def fileno(self):
        return self._file.fileno()

    def close(self):
        self._file.close()

    def streams(self):
        """(reader, writer) asyncio streams over this UART."""
        return asyncio.StreamReader(self._file), asyncio.StreamWriter(self._file, {})
