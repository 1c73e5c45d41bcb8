# Sent by `ppmid deploy --romfs` (host_tools/deploy_romfs.py appends one call): the romfs
# partition's size, then the image (copied to the flash first) written into it in two
# steps, its first bytes last, and the partition read back (SHA-256), as mpremote's
# `romfs deploy` writes it (commands.py _do_romfs_deploy) but in another order: a reset
# in the middle leaves no ROMFS header, so no boot mounts half an image.
# Both kinds of partition vfs.rom_ioctl(2, 0) hands out: an ESP32's Partition object (a
# block device: ioctl(6, block) erases, writeblocks(block, data, offset) writes) and a
# memoryview (stm32, qemu, the emulated board: rom_ioctl 3/4/5 erase, write, end).
import vfs
import hashlib
import binascii

_CHUNK = 4096


def _segment():
    if not hasattr(vfs, 'rom_ioctl') or vfs.rom_ioctl(1) <= 0:
        return None
    d = vfs.rom_ioctl(2, 0)
    return None if isinstance(d, int) else d


def _size(d):
    if hasattr(d, 'ioctl'):
        return d.ioctl(4, 0) * d.ioctl(5, 0)
    return len(d)


def _ok(r, what):
    # the C code returns -errno (memoryview ports) or raises OSError (ESP32 partitions)
    if isinstance(r, int) and r < 0:
        raise OSError(-r, what)
    return r


def _erase(d, n):
    # what holds the image from 0 to n; returns the least write
    try:
        vfs.umount('/rom')  # the mounted image reads the partition in place
    except OSError:
        pass
    if hasattr(d, 'ioctl'):
        bs = d.ioctl(5, 0)
        for b in range((n + bs - 1) // bs):
            _ok(d.ioctl(6, b), 'erase block %d' % b)
        return 4
    step = vfs.rom_ioctl(6, 0)
    if step <= 0:
        return _ok(vfs.rom_ioctl(3, 0, n), 'prepare %d bytes' % n)
    off = 0
    while off < n:
        k = (min(n - off, 32768) + step - 1) // step * step
        w = _ok(vfs.rom_ioctl(3, 0, off, k), 'prepare %d at %d' % (k, off))
        off += k
    return w


def _write(d, off, data):
    if hasattr(d, 'ioctl'):
        bs = d.ioctl(5, 0)
        d.writeblocks(off // bs, data, off % bs)
    else:
        _ok(vfs.rom_ioctl(4, 0, off, data), 'write %d bytes at %d' % (len(data), off))


def _end(d):
    if not hasattr(d, 'ioctl'):
        _ok(vfs.rom_ioctl(5, 0), 'end the write')


def _hash(d, start, n):
    # the partition's bytes read back: through the block device's reads when it has them
    h = hashlib.sha256()
    if hasattr(d, 'readblocks'):
        bs = d.ioctl(5, 0)
        b = bytearray(512)
        off = start
        while off < start + n:
            k = min(512, start + n - off)
            d.readblocks(off // bs, b, off % bs)
            h.update(b[:k] if k < 512 else b)
            off += k
    else:
        mv = memoryview(d)
        off = start
        while off < start + n:
            k = min(_CHUNK, start + n - off)
            h.update(mv[off:off + k])
            off += k
    return binascii.hexlify(h.digest()).decode()


def _rom_info():
    d = _segment()
    print('@@ROM', 'none' if d is None else _size(d))


def _rom_write(path, n):
    # erase, then everything but the first `head` bytes (the ROMFS header's start)
    d = _segment()
    if d is None:
        print('@@ROM none')
        return
    try:
        head = max(4, _erase(d, n))
        with open(path, 'rb') as f:
            off = head
            while off < n:
                f.seek(off)
                data = f.read(min(_CHUNK, n - off))
                _write(d, off, data)
                off += len(data)
        _end(d)
        print('@@WRITTEN', head, _hash(d, head, n - head))
    except OSError as e:
        print('@@ROMERR', e.args[0] if e.args else '?', repr(e))


def _rom_seal(path, head, n):
    # the first bytes last: from now on the boot mounts the image
    d = _segment()
    if d is None:
        print('@@ROM none')
        return
    try:
        with open(path, 'rb') as f:
            _write(d, 0, f.read(head))
        _end(d)
        print('@@SEALED', _hash(d, 0, n))
    except OSError as e:
        print('@@ROMERR', e.args[0] if e.args else '?', repr(e))
