# Sent by `ppmid deploy` at the start of every attempt (host_tools/deploy.py sends
# deploy_hash.py before this and appends the call `_probe(STAGING, BUILD_ID)`): say who is
# there (which chip too), and what the staging dir holds. A deploy keeps its staged files
# across attempts (a watchdog reset mid-copy loses only the file being written), so the
# staging dir carries its build's id in STAGING/.build: the same id -> its directories and
# the SHA-256 of each staged file; another id or none -> the host empties it with `_stage_begin` once it has
# checked the chip (a wrong --board must not throw away another deploy's files).
import os
import sys

MANIFEST = '.build'


def _rm(d):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _rm(p)
        else:
            os.remove(p)
    os.rmdir(d)


def _mcu(machine):
    # the ESP32 port ends _machine with the chip: "Generic ESP32S3 module with ESP32S3"
    i = machine.rfind(' with ')
    return machine[i + 6:].replace(' ', '') if i >= 0 else sys.platform


def _chip():
    # the chip this MicroPython runs on (sys.platform is "esp32" on every variant); the
    # emulated board's ROM hands over the board definition it emulates
    hw = sys.modules.get('_emuboard')
    if hw is not None:
        return hw.info.get('chip', '?')
    return _mcu(getattr(sys.implementation, '_machine', ''))


def _staged_id(stage):
    try:
        with open(stage + '/' + MANIFEST) as f:
            return f.read().strip() or 'none'
    except OSError:
        return 'none'


def _print_hashes(d, rel):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        r = rel + e[0]
        if e[1] == 0x4000:
            print('@@D', r)
            _print_hashes(p, r + '/')
        elif not r.startswith('.'):  # the build's id, the install's marker: not staged files
            print('@@H', r, _sha256_hex(p))  # _sha256_hex: deploy_hash.py, sent first


def _image_on_probation():
    # the partition an image update's first boot runs, not confirmed yet (the update
    # pointer's probation, ppmid.update.slots.switch_image): a deploy would drop it
    try:
        import json
        with open('/upd/state.json') as f:
            return (json.load(f).get('probation') or {}).get('image')
    except (OSError, ValueError, AttributeError):
        return None


def _probe(stage, build_id):
    print('@@PROBE', sys.implementation.name, sys.implementation._mpy, sys.platform, _chip())
    image = _image_on_probation()
    if image:
        print('@@PROBATION', image)
    got = _staged_id(stage)
    print('@@STAGE', 'same' if got == build_id else ('none' if got == 'none' else 'other'))
    if got == build_id:
        _print_hashes(stage, '')
    print('@@END')


def _stage_begin(stage, build_id, dirs):
    # empty the staging dir, make its directories, and only then name the build: a reset
    # half-way leaves no manifest, so the next attempt starts over rather than trusting it
    try:
        _rm(stage)
    except OSError:
        pass
    os.mkdir(stage)
    for d in dirs:
        os.mkdir(stage + '/' + d)
    with open(stage + '/' + MANIFEST, 'w') as f:
        f.write(build_id)
    print('@@STAGED', build_id)
