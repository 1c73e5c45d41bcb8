# Sent by `ppmid deploy` once the staged files are verified (host_tools/deploy.py appends
# the call `_install(NEW, ALL, STAGING, PACKAGE)`): move the staged files into place, drop
# the old package's leftovers, remove the staging dir, and forget any application update
# (/upd: its pointer would keep booting an updated set instead of the one deployed now;
# docs/update.md).
import os

UPDATES = '/upd'  # = ppmid.update.slots.DIR


def _mkdirs(p):
    d = ''
    for part in p.split('/')[:-1]:
        d += '/' + part
        try:
            os.mkdir(d)
        except OSError:
            pass


def _walk(d, out):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _walk(p, out)
            out.append((p, True))
        else:
            out.append((p, False))
    return out


def _install(new, all_files, stage, package):
    for p in new:
        _mkdirs(p)
        os.rename(stage + '/' + p, '/' + p)
    keep = set('/' + p for p in all_files)
    for p, isdir in _walk('/' + package, []):
        if isdir:
            try:
                os.rmdir(p)
            except OSError:
                pass
        elif p not in keep:
            os.remove(p)
    try:
        os.rmdir('/' + package)
    except OSError:
        pass
    for d in (stage, UPDATES):
        try:
            for p, isdir in _walk(d, []):
                (os.rmdir if isdir else os.remove)(p)
            os.rmdir(d)
        except OSError:
            pass
    print('@@INSTALLED', len(new))
