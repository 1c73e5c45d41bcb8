# Sent by `ppmid deploy --romfs` (host_tools/deploy_romfs.py appends one call): the romfs
# partition's size, then the image written into it in two steps, its first bytes last, and
# the partition read back (SHA-256), as mpremote's `romfs deploy` writes it (commands.py
# _do_romfs_deploy) but in another order: a reset in the middle leaves no ROMFS header, so
# no boot mounts half an image. The image comes as the staged chunk files of a deploy
# (/.deploy-new/romfs-image/NNN, CHUNK bytes each, checked by their SHA-256), and a chunk
# the partition already holds is not written again: a watchdog reset mid-write costs only
# the chunk it cut (review_w10-4). Every chunk and every 32 KB read back prints a `@@P`
# line, so the host's stall bound measures silence, not a slow erase (review_w10-10).
# A plain deploy sends `_rom_invalidate` after its install: an image left in the partition
# loses its header, so a later boot without /ppmid on the flash never imports an older
# package from /rom (review_w10-5), and the image file of an older writer goes.
try:
    import vfs
except ImportError:  # a MicroPython before 1.23: no vfs module, so no rom_ioctl either
    vfs = None
import hashlib
import binascii

_CHUNK = 4096
# where the first ROMFS writer (before review_w10-4) copied the image whole; a deploy of
# it that was cut could leave it on the flash
_OLD_IMAGE = '/.romfs-new.img'


def _segment():
    if vfs is None or not hasattr(vfs, 'rom_ioctl') or vfs.rom_ioctl(1) <= 0:
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


def _unmount():
    try:
        vfs.umount('/rom')  # the mounted image reads the partition in place
    except OSError:
        pass


def _erase(n):
    # a memoryview port that prepares only from the start (rom_ioctl(6) <= 0): all of it
    return _ok(vfs.rom_ioctl(3, 0, n), 'prepare %d bytes' % n)


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
            if not (off - start) % 32768:
                print('@@P', off)
    else:
        mv = memoryview(d)
        off = start
        while off < start + n:
            k = min(_CHUNK, start + n - off)
            h.update(mv[off:off + k])
            off += k
            if not (off - start) % 32768:
                print('@@P', off)
    return binascii.hexlify(h.digest()).decode()


def _rom_info():
    d = _segment()
    print('@@ROM', 'none' if d is None else _size(d))


def _chunk_path(d, i):
    return '%s/%03d' % (d, i)


def _holds(d, off, path):
    # whether the partition from `off` holds the file's bytes
    with open(path, 'rb') as f:
        data = f.read()
    got = bytearray(len(data))
    if hasattr(d, 'readblocks'):
        bs = d.ioctl(5, 0)
        d.readblocks(off // bs, got, off % bs)
    else:
        got[:] = memoryview(d)[off:off + len(data)]
    return got == data


def _erase_at(d, off, k):
    # erase the erase units holding [off, off + k) (off one's start); the least write, or 0
    # when the port can only erase from the start (rom_ioctl(6) <= 0)
    if hasattr(d, 'ioctl'):
        bs = d.ioctl(5, 0)
        if off % bs:
            raise OSError(22, 'chunk at %d not on a %d-byte block' % (off, bs))
        for b in range(off // bs, (off + k + bs - 1) // bs):
            _ok(d.ioctl(6, b), 'erase block %d' % b)
        return 4
    step = vfs.rom_ioctl(6, 0)
    if step <= 0:
        return 0
    if off % step:
        raise OSError(22, 'chunk at %d not on a %d-byte sector' % (off, step))
    return _ok(vfs.rom_ioctl(3, 0, off, (k + step - 1) // step * step), 'prepare %d at %d' % (k, off))


def _rom_write(chunks, count, chunk, n):
    # the image (n bytes, `count` chunk files of `chunk` bytes in the dir `chunks`) into the
    # partition but its first `head` bytes; chunk 0 (the header's) is erased and written
    # every time (its erase gives the least write), any other only when it differs
    d = _segment()
    if d is None:
        print('@@ROM none')
        return
    try:
        _unmount()
        head = _erase_at(d, 0, min(chunk, n))
        whole = head == 0
        head = max(4, _erase(n) if whole else head)
        written = 0
        for i in range(count):
            off = i * chunk
            path = _chunk_path(chunks, i)
            if i and not whole:
                if _holds(d, off, path):
                    print('@@P', i, count)
                    continue
                _erase_at(d, off, min(chunk, n - off))
            with open(path, 'rb') as f:
                data = f.read()
            if i == 0:
                _write(d, head, memoryview(data)[head:])
            else:
                _write(d, off, data)
            written += 1
            print('@@P', i, count)
        _end(d)
        print('@@WRITTEN', head, written, _hash(d, head, n - head))
    except OSError as e:
        print('@@ROMERR', e.args[0] if e.args else '?', repr(e))


def _rom_seal(head, n):
    # the first bytes (`head`, given as bytes) last: from now on the boot mounts the image
    d = _segment()
    if d is None:
        print('@@ROM none')
        return
    try:
        _write(d, 0, head)
        _end(d)
        print('@@SEALED', _hash(d, 0, n))
    except OSError as e:
        print('@@ROMERR', e.args[0] if e.args else '?', repr(e))


def _rom_invalidate():
    # after a plain deploy's install: a ROMFS header in the partition zeroed (a NOR write
    # clears bits without an erase), so no later boot mounts that image; an older writer's
    # image file on the flash removed
    try:
        import os
        os.remove(_OLD_IMAGE)
        print('@@GONE', _OLD_IMAGE)
    except OSError:
        pass
    d = _segment()
    if d is None:
        print('@@ROM none')
        return
    try:
        first = bytearray(4)
        if hasattr(d, 'readblocks'):
            d.readblocks(0, first, 0)
        else:
            first[:] = memoryview(d)[:4]
        if first[:3] != b'\xd2\xcd\x31':
            print('@@ROM clear')
            return
        _write(d, 0, b'\0\0\0\0')
        _end(d)
        print('@@ROM invalidated')
    except OSError as e:
        print('@@ROMERR', e.args[0] if e.args else '?', repr(e))
