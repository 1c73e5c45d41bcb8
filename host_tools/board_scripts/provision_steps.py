# Sent by `ppmid provision` (host_tools/provision.py appends one call per step): make the
# directories, hash the staged NAME.tmp files, then rename them over their final names.
import os
import hashlib
import binascii


def _mkdirs(dirs):
    for d in dirs:
        try:
            os.mkdir(d)
        except OSError:
            pass


def _hash_staged(paths):
    for p in paths:
        h = hashlib.sha256()
        with open(p + '.tmp', 'rb') as f:
            while True:
                b = f.read(512)
                if not b:
                    break
                h.update(b)
        print(p, binascii.hexlify(h.digest()).decode())


def _rename_staged(paths):
    for p in paths:
        try:
            os.rename(p + '.tmp', p)
        except OSError:
            os.remove(p)  # filesystems that refuse to rename over a file
            os.rename(p + '.tmp', p)
    print('PROVISIONED')
