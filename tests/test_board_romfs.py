"""The emulated board's romfs partition as its tools see it: mpremote's own `romfs query` and
`romfs deploy` (run as a subprocess) write it through `vfs.rom_ioctl`, a reset mounts the
image at /rom and imports come from it; a board without the partition answers as a stock
MicroPython image does; rom_ioctl's refusals are those of the C one (-errno, never a crash)."""
import hashlib
import os
import subprocess

import pytest

from host_tools import boards, emuboard
from host_tools.boards import BoardError
from host_tools.emuboard import EmulatedBoard


def run_mpremote(port, *args):
    """mpremote itself, as a user runs it: (exit status, stdout + stderr)."""
    p = subprocess.run([boards.mpremote_path(), "connect", port] + list(args), capture_output=True, text=True,
                       timeout=90)
    return p.returncode, p.stdout + p.stderr


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def test_mpremote_deploys_an_image_that_the_next_boot_imports_from_rom(tmp_path):
    src = tmp_path / "app"
    write_tree(src, {"romprobe.py": "ANSWER = 6 * 7\n", "lib/romdeep.py": "def f():\n    return 'deep'\n"})
    with EmulatedBoard(tmp_path / "board") as b:
        assert b.state()["romfs"]["size"] == 524288  # boards/emulated/board.json romfs_bytes
        # erased: no /rom, nothing on the path, and query says so
        assert b.exec("import sys; print(sys.path)").strip() == "['', '.frozen', '/lib']"
        code, out = run_mpremote(b.repl, "romfs", "query")
        assert code == 0, out
        assert "ROMFS0 partition has size 524288 bytes (128 blocks of 4096 bytes each)" in out
        assert "Not a valid ROMFS" in out

        code, out = run_mpremote(b.repl, "romfs", "deploy", str(src))
        assert code == 0, out
        assert "ROMFS image deployed" in out
        size = int(out.split("Image size is ")[1].split()[0])
        # the partition (a file in the state dir) holds mpremote's image (its last 4 KB
        # chunk padded with zeros by mpremote), erased beyond it
        with open(os.path.join(b.state_dir, "romfs.bin"), "rb") as f:
            part = f.read()
        assert size < 4096 and part[size:4096] == bytes(4096 - size)
        assert part[:3] == b"\xd2\xcd\x31" and part[4096:] == b"\xff" * (len(part) - 4096)
        length, at = 0, 3  # the header's length: what follows it (7-bit groups, high bit = more)
        while True:
            length = (length << 7) | (part[at] & 0x7F)
            at += 1
            if not part[at - 1] & 0x80:
                break
        assert at + length == size
        code, out = run_mpremote(b.repl, "romfs", "query")
        assert code == 0 and "Not a valid ROMFS" not in out, out
        assert "ROMFS image size: %d" % length in out

        mark = b.mark()
        b.reset()
        b.wait_for(r"MicroPython", since=mark)
        out = b.exec("import sys, romprobe, romdeep; print(sys.path); print(romprobe.__file__, romprobe.ANSWER); "
                     "print(romdeep.__file__, romdeep.f())")
        lines = out.strip().splitlines()
        # the order an ESP32 built with VFS_ROM has: mp_init appends them after '.frozen',
        # main.c '/lib' after them; '' (the flash root, the cwd) stays first
        assert lines[0] == "['', '.frozen', '/rom', '/rom/lib', '/lib']"
        assert lines[1] == "/rom/romprobe.mpy 42"  # mpremote compiled it; bytecode runs from the image
        assert lines[2] == "/rom/lib/romdeep.mpy deep"
        # read only, as a ROM is
        out = b.exec("try:\n open('/rom/x', 'w')\nexcept OSError as e:\n print('refused', e.errno)")
        assert out.strip() == "refused 30"  # EROFS


def test_an_image_larger_than_the_partition_is_refused_by_mpremote_and_nothing_is_written(tmp_path):
    src = tmp_path / "big"
    os.makedirs(src)
    with open(src / "blob.bin", "wb") as f:
        f.write(os.urandom(12000))
    with EmulatedBoard(tmp_path / "board", romfs_bytes=8192) as b:
        code, out = run_mpremote(b.repl, "romfs", "deploy", str(src))
        assert code == 1, out
        assert "ROMFS0 partition has size 8192 bytes" in out
        assert "ROMFS image is too big for the target partition" in out
        with open(os.path.join(b.state_dir, "romfs.bin"), "rb") as f:
            assert f.read() == b"\xff" * 8192


def test_a_board_without_the_partition_is_a_stock_image_to_mpremote(tmp_path):
    src = tmp_path / "app"
    write_tree(src, {"romprobe.py": "ANSWER = 1\n"})
    with EmulatedBoard(tmp_path / "board", romfs_bytes=0) as b:
        assert b.state()["romfs"] is None
        assert b.exec("import vfs; print(hasattr(vfs, 'rom_ioctl'))").strip() == "False"
        code, out = run_mpremote(b.repl, "romfs", "query")
        assert code == 0 and "ROMFS is not enabled on this device" in out, out
        code, out = run_mpremote(b.repl, "romfs", "deploy", str(src))
        assert code == 1 and "ROMFS is not enabled on this device" in out, out
        assert not os.path.exists(os.path.join(b.state_dir, "romfs.bin"))


ROM_IOCTL_REFUSALS = """
import vfs
def show(what, f):
    try:
        print(what, f())
    except Exception as e:
        print(what, type(e).__name__)
n = len(vfs.rom_ioctl(2, 0))
show('segments', lambda: vfs.rom_ioctl(1))
show('no such partition', lambda: vfs.rom_ioctl(2, 1))
show('no id', lambda: vfs.rom_ioctl(2))
show('unknown op', lambda: vfs.rom_ioctl(9, 0))
show('prepare past the end', lambda: vfs.rom_ioctl(3, 0, n + 1))
show('prepare off a sector', lambda: vfs.rom_ioctl(3, 0, 100, 4096))
show('prepare last sector', lambda: vfs.rom_ioctl(3, 0, n - 4096, 4096))
show('write past the end', lambda: vfs.rom_ioctl(4, 0, n - 2, b'abc'))
show('write no buffer', lambda: vfs.rom_ioctl(4, 0, 0, 123))
show('write', lambda: vfs.rom_ioctl(4, 0, n - 4, b'\\x0f\\xf0\\x33\\xff'))
show('write unerased', lambda: vfs.rom_ioctl(4, 0, n - 4, b'\\xf0\\xf0\\xff\\x00'))
show('complete', lambda: vfs.rom_ioctl(5, 0))
show('min prepare', lambda: vfs.rom_ioctl(6, 0))
def store():
    vfs.rom_ioctl(2, 0)[0] = 0x12
show('store through the segment', store)
def store_slice():
    vfs.rom_ioctl(2, 0)[0:2] = b'ab'
show('store a slice through the segment', store_slice)
print('tail', bytes(memoryview(vfs.rom_ioctl(2, 0))[n - 4:]).hex())
"""


def test_rom_ioctl_refuses_as_the_c_one_does_and_writes_as_nor_flash(tmp_path):
    with EmulatedBoard(tmp_path / "board", romfs_bytes=16384) as b:
        got = dict(line.rsplit(" ", 1) for line in b.exec(ROM_IOCTL_REFUSALS).strip().splitlines())
        with open(os.path.join(b.state_dir, "romfs.bin"), "rb") as f:
            part = f.read()
    assert got.pop("segments") == "1"
    for what in ("no such partition", "no id", "unknown op", "prepare past the end", "prepare off a sector",
                 "write past the end"):
        assert got.pop(what) == "-22", what  # -EINVAL, returned as the ports' C code returns it
    assert got.pop("write no buffer") == "TypeError"
    assert got.pop("prepare last sector") == "4"  # the least write, as rom_ioctl(3) says
    assert got.pop("write") == "0" and got.pop("write unerased") == "0" and got.pop("complete") == "0"
    assert got.pop("min prepare") == "4096"
    # the segment is read-only, as a real port's (review_w10-8): only rom_ioctl 3/4/5 write
    assert got.pop("store through the segment") == "TypeError"
    assert got.pop("store a slice through the segment") == "TypeError"
    # NOR flash: the second write, not erased first, only cleared bits (0x0f & 0xf0 = 0)
    assert got.pop("tail") == "00f03300"
    assert got == {}
    assert part[-4:] == b"\x00\xf0\x33\x00" and part[:-4] == b"\xff" * (16384 - 4)


def test_a_garbled_partition_is_not_mounted_and_the_board_boots(tmp_path):
    with EmulatedBoard(tmp_path / "board", romfs_bytes=8192) as b:
        with open(os.path.join(b.state_dir, "romfs.bin"), "r+b") as f:
            f.write(b"\xd2\xcd\x31\xff\xff\x7f")  # the magic, then a length past the partition's end
        mark = b.mark()
        b.reset()
        b.wait_for(r"MicroPython", since=mark)
        out = b.exec("import sys, os; print(sys.path, 'rom' in os.listdir('/'))")
        assert out.strip() == "['', '.frozen', '/lib'] False"


@pytest.mark.parametrize("value", [-4096, 1000, "4096", 4096.0])
def test_a_romfs_size_that_is_not_whole_sectors_is_refused(tmp_path, value):
    with pytest.raises(BoardError, match="romfs_bytes"):
        emuboard.Supervisor(str(tmp_path), romfs_bytes=value)


def test_a_partition_file_of_another_size_is_refused_not_reused(tmp_path):
    with open(tmp_path / "romfs.bin", "wb") as f:
        f.write(b"\xff" * 4096)
    sup = emuboard.Supervisor(str(tmp_path), romfs_bytes=8192, quiet=True)
    with pytest.raises(BoardError, match=r"romfs\.bin is 4096 bytes, the board's romfs partition 8192"):
        sup._prepare_romfs()
    assert hashlib.sha256(open(tmp_path / "romfs.bin", "rb").read()).digest() == \
        hashlib.sha256(b"\xff" * 4096).digest()
