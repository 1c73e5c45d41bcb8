# Sent by `ppmid deploy` once the staged files are verified (host_tools/deploy.py appends
# the call `_install(BUILD, NEW, ALL, PACKAGE)`, NEW = [[path, sha256]] in install order):
# the firmware's own install (firmware/install.py: the staged copy when the build changes
# it, else the installed one) writes its marker, then renames, drops the old package's
# leftovers and any application update but its replay floors (docs/update.md), and removes
# the staging dir. A reset in the middle is finished by the board at its next boot; a
# flash error (OSError) is said (@@FAILED), not taken for a lost board.
import os
import sys

STAGE = '/.deploy-new'  # = install.STAGE


def _step(path):
    print('@@R', path)  # progress: the host cuts a call that stays silent (a reset)


def _install(build, new, all_files, package):
    sys.modules.pop('install', None)
    sys.path.insert(0, STAGE)
    try:
        import install
    finally:
        sys.path.pop(0)
    try:
        install.begin('', build, new, all_files, package)
        _, renamed, listed = install.finish('', _step)
    except install.Refused as e:
        # nothing was renamed: the old set stays whole, and so does what is staged (the
        # next deploy resumes from it); no marker, so no boot tries it either
        try:
            os.remove(STAGE + '/' + install.MARKER)
        except OSError:
            pass
        print('@@REFUSED', e.code, e.message)
        return
    except Exception as e:  # OSError: a flash error in a rename, a delete, the pointer
        # not a lost board: said, so that the host stops (docs/platform.md `ppmid deploy`);
        # the installed files are the listed ones no longer staged. The marker stays: every
        # boot tries again (install.run), and boots no mix of the two builds meanwhile
        done = [p for p, _ in new if not _staged(p)]
        print('@@FAILED', len(done), len(new), repr(e))
        for p in done:
            print('@@NEW', p)
        return
    print('@@INSTALLED', renamed, listed)


def _staged(path):
    try:
        os.stat(STAGE + '/' + path)
        return True
    except OSError:
        return False
