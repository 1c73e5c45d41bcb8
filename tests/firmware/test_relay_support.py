# Shared helpers for the relay and journal tests (no tests of the relay itself here; the
# few tests below check that the fakes behave like the interfaces they stand in for).
# Flash: under MicroPython a real VfsLfs2 on a RAM block device; under CPython a temp dir.
import os
import struct

_mounts = [0]


class RamBlockDevice:
    def __init__(self, block_size=512, blocks=256):
        self.bs = block_size
        self.data = bytearray(block_size * blocks)
        self.writes = 0
        self.bytes_written = 0

    def readblocks(self, n, buf, off=0):
        a = n * self.bs + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:
            off = 0
            # erase-before-write semantics are not modelled: LittleFS copes either way
        a = n * self.bs + off
        self.data[a:a + len(buf)] = buf
        self.writes += 1
        self.bytes_written += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.bs
        if op == 5:
            return self.bs
        if op == 6:
            return 0
        return None


class FileBlockDevice:
    """Flash in a host file, as on the emulated board (keeps the test heap small)."""

    def __init__(self, path, block_size=512, blocks=256):
        self.bs = block_size
        self.blocks = blocks
        with open(path, "wb") as f:
            f.write(b"\xff" * (block_size * blocks))
        self.f = open(path, "r+b")

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        self.f.seek(n * self.bs + (off or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.bs
        if op == 6:
            return 0
        return None


def fresh_root(blocks=256):
    """An empty directory on a fresh flash filesystem; returns its path."""
    try:
        import vfs
    except ImportError:
        import tempfile
        return tempfile.mkdtemp(prefix="jnl")
    import time
    bdev = FileBlockDevice("/tmp/ppmid-jt-%d-%d.img" % (time.ticks_us() & 0xFFFFFF, _mounts[0]), 512, blocks)
    vfs.VfsLfs2.mkfs(bdev)
    _mounts[0] += 1
    path = "/jt%d" % _mounts[0]
    vfs.mount(vfs.VfsLfs2(bdev), path)
    return path


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def eui(text):
    import binascii
    return binascii.unhexlify(text)


ESME = "00DB1234567890A0"
GSME = "00DB1234567890A1"
PPMID = "00DB1234567890A4"
SUPPLIER = "90B3D51F30010000"
ACB = "90B3D51F30000002"


def gbcs_message(cra, counter, originator, recipient, code=0x0007, body=b"\x01\x02\x03"):
    """A small General-Signing (DF 09 ...) message with the fields the relay reads."""
    out = bytearray(b"\xDF\x09")
    out.append(cra)
    out += struct.pack(">Q", counter)
    out += b"\x08" + eui(originator)
    out += b"\x08" + eui(recipient)
    out += b"\x00"
    out += b"\x02" + struct.pack(">H", code)
    out.append(len(body))
    out += body
    out += b"\x00"
    return bytes(out)


def test_gbcs_message_layout():
    m = gbcs_message(1, 5, SUPPLIER, ESME)
    assert m[0] == 0xDF and m[2] == 1
    assert m[3:11] == struct.pack(">Q", 5)
    assert m[12:20] == eui(SUPPLIER) and m[21:29] == eui(ESME)


def test_fresh_root_is_empty_and_writable():
    root = fresh_root()
    assert os.listdir(root) == []
    write_file(root + "/x", b"abc")
    assert read_file(root + "/x") == b"abc"
