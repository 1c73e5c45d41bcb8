# Sent by `ppmid deploy` (host_tools/deploy.py appends the call `_hash_files(FILES, PREFIX)`):
# the SHA-256 of each file under PREFIX, or 'missing'. MicroPython and CPython both run it.
import hashlib
import binascii


def _sha256_hex(p):
    h = hashlib.sha256()
    b = bytearray(512)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(b[:n] if n < 512 else b)
    return binascii.hexlify(h.digest()).decode()


def _hash_files(files, prefix):
    for p in files:
        try:
            print('@@H', p, _sha256_hex(prefix + '/' + p))
        except OSError:
            print('@@H', p, 'missing')
