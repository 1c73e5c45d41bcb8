# Application sets on flash and the pointer that chooses one (docs/update.md "Slots").
#
#   /ppmid/...            the root set, as `ppmid deploy` (or the frozen image) installed it
#   /upd/a/, /upd/b/      two slots an update downloads into (ppmid/..., board.json)
#   /upd/state.json       the pointer: which set runs, on probation or not, what happened last
#   /upd/stage.json       the offer being downloaded into a slot (absent when none)
#   /upd/boots            boots in a row that did not start the app (safe mode after SAFE_AFTER)
#
# Every change of state.json is a new file renamed over the old one (atomic on LittleFS
# and POSIX), so a power cut leaves the old pointer or the new one. The switch to a new
# set is that one rename; a rollback is another. The pointer also keeps the replay floors
# ("seq": the seq of the last application-set manifest switched to, "image_seq": of the
# last image manifest; one each, so that a set and an image signed in one order may be
# installed in the other; docs/update.md "Replay"), raised by
# the switch's own rename and carried over by every later write (a probation boot
# counted, confirm, rollback): no second file whose write could leave the floor and the
# set that runs out of step. `ppmid deploy` keeps them too: its install (install.py,
# forget_updates) leaves {"slot": "", "seq": .., "image_seq": ..}, the root set with the
# floors alone. main.py calls choose() before anything of the application
# is imported. Only os/json here: it runs from the root set's copy while the chosen set's
# package is not imported yet.
import json
import os

DIR = "/upd"
STATE = "/upd/state.json"
STAGE = "/upd/stage.json"
SLOTS = ("a", "b")
BOOTS = "/upd/boots"
SAFE_AFTER = 3  # boots in a row that did not start the app before the next one is in safe mode

E_UPDATE_BOOT = "E_UPDATE_BOOT"        # the new set did not start within probation_boots boots
E_UPDATE_TIMEOUT = "E_UPDATE_TIMEOUT"  # the new set did not run and connect within probation_s


def _path(root, p):
    return root.rstrip("/") + p


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj))
    os.rename(tmp, path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            continue
        cur += "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass  # exists


def rmtree(path):
    try:
        entries = list(os.ilistdir(path)) if hasattr(os, "ilistdir") else \
            [(n, 0x4000 if os.path.isdir(path + "/" + n) else 0x8000) for n in os.listdir(path)]
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            rmtree(p)
        else:
            remove(p)
    try:
        os.rmdir(path)
    except OSError:
        pass


def state(root=""):
    """The pointer (a dict); {"slot": ""} (the root set) when there is none or it is unreadable."""
    st = read_json(_path(root, STATE))
    if not isinstance(st, dict) or st.get("slot", "") not in ("",) + SLOTS:
        return {"slot": ""}
    return st


def summary(st):
    """The info's "update" (docs/mqtt.md): the running slot, the version before it, whether
    it is on probation, and the last update's result; None for a pointer at the root set
    with nothing of that, the replay floors alone (what `ppmid deploy` keeps, install.py)."""
    if not (st.get("slot") or "last" in st or "probation" in st or "image" in st):
        return None
    last = st.get("last") or {}
    prev = st.get("previous") or {}
    out = {"slot": st.get("slot", ""), "previous": prev.get("version") or last.get("previous"),
           "probation": "probation" in st, "last": last.get("result"), "last_version": last.get("version"),
           "error": (last.get("error") or {}).get("code")}
    if st.get("image"):
        out["image"] = st["image"]  # {"label", "version"} of the last image an update installed
    return out


def floor(st, image=False):
    """The replay floor of pointer st for an application set (image False) or a firmware
    image: the seq of the last manifest of that kind switched to, 0 when none ever was
    (or the pointer is unreadable: then the root set runs too)."""
    seq = st.get("image_seq" if image else "seq", 0)
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def floors(st):
    """(application-set floor, image floor) of pointer st: what an offer is checked
    against before its kind is known (ppmid.update.manifest.check_applicable)."""
    return floor(st), floor(st, True)


def _keep_floors(st, new):
    for k in ("seq", "image_seq"):
        if k in st:
            new[k] = st[k]
    return new


def slot_dir(root, slot):
    return _path(root, DIR + "/" + slot) if slot else (root.rstrip("/") or "/")


def target_slot(st):
    """The slot a new download goes to: never the running one."""
    return "b" if st.get("slot") == "a" else "a"


def switch(root, slot, version, running, offer_id, boots, seconds, seq):
    """Point at the downloaded slot, on probation, and raise the replay floor to the
    manifest's seq: the atomic step of an update."""
    st = state(root)
    new = {"slot": slot, "version": version, "offer": offer_id,
           "previous": {"slot": st.get("slot", ""), "version": running},
           "probation": {"boots": 0, "max_boots": boots, "seconds": seconds}}
    _keep_floors(st, new)["seq"] = max(floor(st), seq)
    if "last" in st:
        new["last"] = st["last"]
    write_json(_path(root, STATE), new)
    remove(_path(root, STAGE))


def switch_image(root, label, version, running, offer_id, seconds, seq):
    """Point at a new firmware image (docs/update.md "Image updates"), on probation for one
    boot: the ESP-IDF bootloader rolls back a partition whose first boot ends unmarked, so
    a second boot means it failed. The application set (slot) stays as it is. The images'
    replay floor is raised to seq, as switch() raises the sets'."""
    st = state(root)
    new = {"slot": st.get("slot", ""), "version": version, "offer": offer_id,
           "previous": {"slot": st.get("slot", ""), "version": running, "image": st.get("image")},
           "image": {"label": label, "version": version},
           "probation": {"boots": 0, "max_boots": 1, "seconds": seconds, "image": label}}
    _keep_floors(st, new)["image_seq"] = max(floor(st, True), seq)
    if "last" in st:
        new["last"] = st["last"]
    write_json(_path(root, STATE), new)
    remove(_path(root, STAGE))


def rollback(root, code, message):
    """Back to the previous set; the failed version and the reason go into "last". The
    replay floor stays where the switch raised it: the manifest that failed is not taken
    again (a fixed one is signed with a higher seq), nor any signed before it."""
    st = state(root)
    prev = st.get("previous") or {"slot": ""}
    new = {"slot": prev.get("slot", ""), "version": prev.get("version"), "offer": st.get("offer"),
           "last": {"result": "rolled-back", "version": st.get("version"), "previous": prev.get("version"),
                    "error": {"code": code, "message": message}, "reported": False}}
    if prev.get("image"):
        new["image"] = prev["image"]  # the image before a failed image update
    _keep_floors(st, new)
    write_json(_path(root, STATE), new)
    return prev


def confirm(root, running):
    """The new set runs and is connected: probation over, the previous set stays as it is
    until the next update overwrites its slot."""
    st = state(root)
    if "probation" not in st:
        return False
    p = st.pop("probation")
    prev = st.get("previous") or {}
    if p.get("image"):
        running = st.get("version")  # an image's version, not the application set's
    st["last"] = {"result": "applied", "version": running, "previous": prev.get("version"), "reported": False}
    write_json(_path(root, STATE), st)
    return True


def mark_reported(root):
    st = state(root)
    if "last" in st:
        st["last"]["reported"] = True
        write_json(_path(root, STATE), st)


def choose(root="", log=print):
    """For main.py, before the application is imported: (path of the set to run, probation
    dict or None). On probation each call counts a boot; past max_boots the previous set
    comes back (the new one crashed, hung into the watchdog, or was cut off that often)."""
    st = state(root)
    slot = st.get("slot", "")
    p = st.get("probation")
    if slot and not exists(slot_dir(root, slot) + "/ppmid"):
        # a pointer at an empty slot (cannot happen through switch(), which runs after the
        # download is checked): the root set is all there is
        log("PPMID update: slot %s is empty: running the root set" % slot)
        prev = rollback(root, E_UPDATE_BOOT, "slot %s has no application" % slot)
        return slot_dir(root, prev.get("slot", "")), None
    if p is not None:
        p["boots"] = p.get("boots", 0) + 1
        if p["boots"] > p.get("max_boots", 3):
            prev = rollback(root, E_UPDATE_BOOT, "version %s did not run and connect within %d boots"
                            % (st.get("version"), p.get("max_boots", 3)))
            log("PPMID update: rolled back to %s (%s)" % (prev.get("version"), E_UPDATE_BOOT))
            return slot_dir(root, prev.get("slot", "")), None
        write_json(_path(root, STATE), st)
        log("PPMID update: version %s on probation, boot %d of %d" % (st.get("version"), p["boots"], p["max_boots"]))
    return slot_dir(root, slot), p


def count_boot(root=""):
    """For main.py (not on probation, which counts its own): this boot's number in the row
    of boots that have not started the app yet (ppmid.boot clears it once the app runs)."""
    n = 0
    try:
        with open(_path(root, BOOTS)) as f:
            n = int(f.read())
    except (OSError, ValueError):
        pass
    n += 1
    makedirs(_path(root, DIR))
    tmp = _path(root, BOOTS) + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(n))
    os.rename(tmp, _path(root, BOOTS))
    return n


def boot_ok(root=""):
    remove(_path(root, BOOTS))


async def watch(board, root, seconds, sleep_ms):
    """Probation's clock (started by main.py beside the app): the app confirms by removing
    "probation" from the pointer once it runs and is connected; if it has not within
    `seconds`, the previous set comes back and the board resets."""
    waited = 0
    while waited < seconds * 1000:
        await sleep_ms(1000)
        waited += 1000
        if "probation" not in state(root):
            return
    st = state(root)
    if "probation" not in st:
        return
    prev = rollback(root, E_UPDATE_TIMEOUT, "version %s did not run and connect within %d s"
                    % (st.get("version"), seconds))
    print("PPMID update: rolled back to %s (%s)" % (prev.get("version"), E_UPDATE_TIMEOUT))
    board.reset()
