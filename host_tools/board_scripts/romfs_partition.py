# The emulated board's romfs partition (host_tools/emuboard.py writes it to
# STATE_DIR/romfs_partition.py; rom.py runs it at boot when the board definition has
# `romfs_bytes`): what a MicroPython image built with MICROPY_VFS_ROM does in mp_init (the
# partition mounted at /rom when it holds a ROMFS image, '/rom' and '/rom/lib' on sys.path
# after '.frozen', as extmod/vfs.c mp_vfs_mount_romfs_protected appends them), and the
# `vfs.rom_ioctl` that mpremote's `romfs query|deploy` and `ppmid deploy --romfs` call.
#
# The unix port has no rom_ioctl, so `vfs` in sys.modules becomes an object holding the
# real module's names and rom_ioctl. It answers as the ports that hand out the partition
# as a memoryview do (stm32, qemu; docs/library/vfs.rst): errors are returned as -errno,
# not raised. An ESP32 hands out its Partition object instead (a block device that
# mpremote erases with ioctl(6) and writes with writeblocks): mpremote, and so our deploy,
# speak both. Here the partition is a bytearray on the chip's heap (the supervisor adds its
# size to the heap, so the app keeps what board.json names); on an ESP32 it is flash mapped
# into the address space, outside the heap.
import sys

_EINVAL = 22
_SECTOR = 4096  # the erase unit: an ESP32's flash sector; rom_ioctl(6) says it
_MIN_WRITE = 4  # what rom_ioctl(3) returns, as the stm32 port's QSPI flash does
_ERASED = b'\xff' * _SECTOR


class _VfsWithRom:
    pass


def install(f, size, _vfs):
    # _vfs: the port's own module (sys.modules['vfs'] is replaced below)
    # the partition as a bytes object: the view rom_ioctl(2) hands out is read-only, as a real
    # port's (stm32/qemu: a memoryview without the writable flag; ESP32: a Partition), so a
    # script that stores through it fails here as there (review_w10-8); the writes below go
    # through a writable view of the same memory, which only this module has
    import uctypes
    buf = bytes(size)
    mv = uctypes.bytearray_at(uctypes.addressof(buf), size)
    f.seek(0)
    f.readinto(mv)
    seg = memoryview(buf)

    def _put(off, data):
        # NOR flash: a write only clears bits; bytes not erased first keep their zeros
        # (so a write over an image without rom_ioctl(3) is caught by a read-back)
        n = len(data)
        old = bytes(mv[off:off + n])
        if old != _ERASED[:n]:
            data = bytes([a & b for a, b in zip(old, data)])
        mv[off:off + n] = data
        f.seek(off)
        f.write(data)

    def rom_ioctl(op, *args):
        if op == 1:
            return 1  # one partition: id 0
        if not args or args[0] != 0:
            return -_EINVAL
        if op == 2:
            return seg
        if op == 3:  # (3, id, length) or (3, id, offset, length): erase
            if len(args) == 2:
                off, n = 0, args[1]
            elif len(args) == 3:
                off, n = args[1], args[2]
            else:
                return -_EINVAL
            if off < 0 or n < 0 or off + n > size or off % _SECTOR:
                return -_EINVAL
            end = min(size, (off + n + _SECTOR - 1) // _SECTOR * _SECTOR)
            while off < end:
                mv[off:off + _SECTOR] = _ERASED
                f.seek(off)
                f.write(_ERASED)
                off += _SECTOR
            return _MIN_WRITE
        if op == 4:  # (4, id, offset, data)
            if len(args) != 3:
                return -_EINVAL
            off = args[1]
            data = memoryview(args[2])  # TypeError for what has no buffer, as the C code
            if off < 0 or off + len(data) > size:
                return -_EINVAL
            for i in range(0, len(data), _SECTOR):
                _put(off + i, data[i:i + _SECTOR])
            return 0
        if op == 5:  # (5, id): the write is over
            f.flush()
            return 0
        if op == 6:  # (6, id): the least that rom_ioctl(3) prepares at once
            return _SECTOR
        return -_EINVAL

    mod = _VfsWithRom()
    for name in dir(_vfs):
        if not name.startswith('__'):
            setattr(mod, name, getattr(_vfs, name))
    mod.__name__ = 'vfs'
    mod.rom_ioctl = rom_ioctl
    sys.modules['vfs'] = mod
    try:
        _vfs.mount(_vfs.VfsRom(seg), '/rom')
    except OSError:
        return False  # erased, or not a ROMFS image: no /rom, as on a board (no message)
    at = sys.path.index('.frozen') + 1 if '.frozen' in sys.path else len(sys.path)
    sys.path[at:at] = ['/rom', '/rom/lib']
    return True
