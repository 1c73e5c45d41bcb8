# The gateway's side of an update over MQTT (docs/update.md "Transport"). Imported on the
# first message on ppmid/v1/EUI/update/offer or .../update/data (the intake routes them
# here); statuses go out retained on ppmid/v1/EUI/update.
#
# Pull, not push: the gateway says which file and offset it needs next (in every
# "downloading" status) and takes a chunk only when it starts exactly there, so a chunk
# that is repeated, reordered or cut short is ignored (and the need said again), and a
# download cut by a drop or a power cut goes on where the flash says it stopped: the
# sender re-sends the offer, and the same signed manifest resumes instead of restarting.
# Each file's SHA-256 is checked by reading it back from flash once it is complete.
import gc
import json
import os
import sys
from hashlib import sha256
from binascii import hexlify

import asyncio
from ppmid.errors import PpmidError, E_BUSY
from ppmid.update import slots
from ppmid.update.manifest import UpdateError, PATH, SIZE, SHA256
from ppmid.mqtt.contract import ROOT, UPDATE

# An offer is read where it lies, in the MQTT client's receive buffer (valid until the
# handler returns: the offer is checked before that), when json.loads takes a buffer as
# MicroPython's does: a copy of it as bytes was one more allocation the size of the whole
# manifest (~13 KB for the app), which a fragmented heap could not always give
_OFFER_IN_PLACE = sys.implementation.name == "micropython"

E_UPDATE_HASH = "E_UPDATE_HASH"      # a downloaded file's SHA-256 differs from the manifest's
E_UPDATE_SPACE = "E_UPDATE_SPACE"    # the flash cannot hold the new set
E_UPDATE_BUSY = "E_UPDATE_BUSY"      # another update is downloading, or the running one is on probation
E_UPDATE_FLASH = "E_UPDATE_FLASH"    # writing the slot failed
E_UPDATE_CHUNK = "E_UPDATE_CHUNK"    # a data message that is not a chunk
E_UPDATE_INTERNAL = "E_UPDATE_INTERNAL"  # the updater failed unexpectedly (a bug, or out of memory)
E_UPDATE_IMAGE = "E_UPDATE_IMAGE"    # the bootloader refused to boot the downloaded image (set_boot failed)
CHUNK_HEADER = 6                     # file index (2 bytes) + offset (4 bytes), big-endian
IDLE_WAIT_S = 120                    # the switch waits this long at most for in-flight commands
FS_SLACK = 4 * 4096                  # LittleFS (4 KB blocks on the ESP32): partial last blocks, metadata, renames


def _config(root):
    # the update settings and the config version: read again from flash (the app drops
    # the update section and the config module after boot: they cost heap all day)
    # config.load checks every section: a "zigbee" one loads the commissioning modules and
    # han_start, a "users" one users_config; all of it goes again with the config module,
    # but not what the app held before (drop_since)
    before = set(sys.modules)
    from ppmid import config
    try:
        cfg = config.load(root + "/config.json")
    finally:
        from ppmid.modules import drop_since
        drop_since(before)
        gc.collect()
    return cfg["update"], cfg["version"]


def _unload(name):
    from ppmid.modules import unload
    unload(name, "ppmid.modules")
    gc.collect()


def file_hash(path):
    h = sha256()
    buf = bytearray(512)
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    return h.digest()  # as a parsed manifest holds a file's (manifest.SHA256)


def file_size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def space_margin(relay):
    """Flash a download must leave free: room for the relay journal to grow and compact
    (from its max_bytes) and LittleFS's own slack. Before session 7 it
    was 16 KB, and a full journal then filled the flash (review 2, M1)."""
    from ppmid.relay.journal import MAX_BYTES
    max_bytes = getattr(getattr(relay, "journal", None), "max_bytes", None) or MAX_BYTES
    # the journal's file grows to max_bytes, and a compaction writes the new file (up to
    # max_bytes) beside the old one before the rename (docs/relay.md, "Flash space")
    return FS_SLACK + 2 * max_bytes


def free_bytes(root):
    try:
        st = os.statvfs(root or "/")
        return st[0] * st[4]
    except (OSError, AttributeError):
        return None


_updater = []  # the one Updater, made on the first update message


async def handle(context, topic, payload):
    """Every topic but cmd, from the intake; context: (board, relay, link, running version)."""
    if not _updater:
        gc.collect()
        board, relay, link, version = context
        _updater.append(Updater(board, relay, link.client, version))
    u = _updater[0]
    try:
        await u.handle(topic, payload)
    except MemoryError:
        # no block as large as the offer's manifest text (~12 KB for the app) on a heap that
        # lazily loaded modules have cut into pieces: a transient state, not a bug. Refused
        # E_BUSY, nothing dropped (a download under way resumes when offered again), and the
        # id read from the raw offer, which needs no large block (the sender offers again).
        oid = u.stage["id"] if u.stage else None
        if oid is None and topic.endswith("/offer"):
            from ppmid.mqtt.refusal import _id_in
            from ppmid.modules import unload
            oid = _id_in(payload)
            unload("ppmid.mqtt.refusal", "ppmid.modules")
        await u.refuse(UpdateError(E_BUSY, "the gateway's heap has no room to read this update message now: "
                                   "offer again later"), oid)
    except Exception as exc:  # noqa: BLE001 - whatever the updater hits, commands go on
        # an exception would reach the MQTT client, which withholds the PUBACK and drops
        # the link: the broker would redeliver this message for ever, and commands with it
        import sys
        sys.print_exception(exc) if hasattr(sys, "print_exception") else None
        oid = u.stage["id"] if u.stage else None
        if oid is None and topic.endswith("/offer"):
            try:
                from ppmid.update.manifest import parse_offer
                oid = parse_offer(payload if _OFFER_IN_PLACE else bytes(payload))[0]
            except Exception:  # noqa: BLE001 - no id to name
                pass
        u.abandon()
        await u.refuse(UpdateError(E_UPDATE_INTERNAL, "the updater failed: %r" % (exc,)), oid)


class Updater:
    """One per running gateway. board: for the name, the root and reset(); relay: its
    info() says when no command is in flight; client: the MQTT link's; version: the
    running one."""

    def __init__(self, board, relay, client, version, log=print):
        self.board = board
        self.root = board.fs_root.rstrip("/")
        self.relay = relay
        self.client = client
        self.topic = ROOT + client.client_id + "/" + UPDATE  # the client id is the gateway's EUI
        self.version = version
        self.log = log
        self.stage = None      # {"id", "manifest", "digest", "slot"} of the download under way (digest: of the signed text)
        self.need = None       # (file index, offset) or None when everything is there
        self.switching = False
        self.stats = {"chunks": 0, "ignored": 0, "bytes": 0}

    # ---- statuses ----------------------------------------------------------------------
    async def publish(self, state, oid=None, version=None, error=None, **extra):
        obj = {"state": state, "running": self.version}
        if oid is not None:
            obj["id"] = oid
        if version is not None:
            obj["version"] = version
        if error is not None:
            obj["error"] = error.as_dict() if isinstance(error, PpmidError) else error
        for k in extra:
            obj[k] = extra[k]
        await self.client.publish(self.topic, json.dumps(obj).encode(), 1, True, False)

    async def refuse(self, exc, oid=None, version=None):
        self.log("PPMID update: refused %s: %s" % (version or "offer", exc))
        await self.publish("refused", oid, version, exc)

    async def progress(self):
        st = self.stage
        m = st["manifest"]
        total = 0
        got = 0
        # a file is [path, size, sha256] (manifest.parse_manifest), an image one entry {sha256, size}
        for i, f in enumerate(m["files"] if "files" in m else ((None, m["image"]["size"]),)):
            total += f[SIZE]
            if self.need is None or i < self.need[0]:
                got += f[SIZE]
            elif i == self.need[0]:
                got += self.need[1]
        extra = {"received": got, "total": total, "chunk": self.chunk}
        if self.need is not None:
            extra["file"], extra["offset"] = self.need
        await self.publish("downloading", st["id"], m["version"], **extra)

    # ---- messages ------------------------------------------------------------------------
    async def handle(self, topic, payload):
        try:
            if topic == self.topic + "/offer":
                await self.offer(payload if _OFFER_IN_PLACE else bytes(payload))
            elif topic == self.topic + "/data":
                await self.data(payload)
            else:
                self.stats["ignored"] += 1  # no other topic is subscribed: nothing to answer
        except PpmidError as exc:
            # PpmidError, not UpdateError: the update modules are dropped after boot and
            # imported again on demand, so a module imported later (update/image.py) may raise
            # the UpdateError of a fresher ppmid.update.manifest than the one this module holds
            oid = self.stage["id"] if self.stage else None
            ver = self.stage["manifest"]["version"] if self.stage else None
            if exc.code in (E_UPDATE_HASH, E_UPDATE_SPACE):
                self.abandon()  # the download cannot go on: the next offer starts afresh
            await self.refuse(exc, oid, ver)
        except OSError as exc:  # flash full or failing while writing the slot
            oid = self.stage["id"] if self.stage else None
            ver = self.stage["manifest"]["version"] if self.stage else None
            self.abandon()
            await self.refuse(UpdateError(E_UPDATE_FLASH, "writing the new set to flash failed: %r" % (exc,)), oid, ver)

    def _slot_file(self, i):
        return slots.slot_dir(self.root, self.stage["slot"]) + "/" + self.stage["manifest"]["files"][i][PATH]

    async def offer(self, payload):
        """Check an offer; every refusal names the offer's id (and version, when readable),
        so that its sender hears it."""
        from ppmid.update import manifest as M
        oid = ver = parsed = None
        try:
            parsed = M.parse_offer(payload)
            oid = parsed[0]
            ver = json.loads(parsed[1]).get("version")
        except Exception:  # noqa: BLE001 - unreadable: verify_offer below says why
            pass
        try:
            await self._offer(M, payload, oid, ver, parsed)
        except PpmidError as exc:  # UpdateError, or a config on flash that no longer validates
            if exc.code == E_UPDATE_HASH:
                self.abandon()  # a resumed download whose file on flash went bad: start afresh
            await self.refuse(exc, oid, ver if isinstance(ver, str) else None)

    async def _offer(self, M, payload, oid, ver, parsed):
        # The sender re-offers when it hears nothing, also while this very version is being
        # switched to or is on probation (a cut can swallow the "switching" status): that
        # is no refusal, the result comes once probation ends. Only the version is
        # compared: nothing is done on the strength of it.
        st = slots.state(self.root)
        if self.switching or "probation" in st:
            busy = self.stage["manifest"]["version"] if self.switching else st.get("version")
            if ver == busy:
                await self.publish("switching" if self.switching else "probation", oid, ver)
                return
            raise UpdateError(E_UPDATE_BUSY, "version %s is being switched to or on probation: offer again once "
                              "it is confirmed" % busy)
        settings, cfg_version = _config(self.root)
        try:
            # the floor is raised only by the switch (slots.switch): a download that fails,
            # or a switch that is put back, leaves the same manifest free to be offered again
            oid, m, text = M.verify_offer(payload, settings["public_key"], self.board.name, self.version, cfg_version,
                                          self.client.client_id, self._now(), slots.floors(st), parsed)
        finally:
            _unload("ppmid.update.p256")
        if "image" not in m and globals().get("__file__", "").startswith("/rom/"):
            # the package runs in place from the romfs partition (`ppmid deploy --romfs`):
            # a set in a flash slot would be imported instead, its .mpy copied into the heap
            # that the ROMFS route exists to spare, and only a deploy writes the partition
            raise UpdateError(M.E_UPDATE_ROMFS, "this gateway runs its application from a ROMFS image (/rom/ppmid, "
                              "`ppmid deploy --romfs`): an application-set update would put .mpy files on the flash "
                              "instead; update it with `ppmid deploy --romfs`, or with an image update")
        # a chunk, its header and the topic must fit the client's receive buffer
        self.chunk = min(settings["chunk"], self.client.max_packet - 128)
        self.probation = (settings["probation_boots"], settings["probation_s"])
        staged = slots.read_json(self.root + slots.STAGE)
        # the signed text's digest stands for it from here: the text may be a view of the
        # MQTT client's receive buffer (manifest.parse_offer), valid only in this handler
        digest = hexlify(sha256(text if _OFFER_IN_PLACE or not isinstance(text, str) else text.encode())
                         .digest()).decode()
        text = None
        if "image" in m:
            await self._image_offer(m, digest, oid)
            return
        if self.stage is not None and self.stage["digest"] == digest or \
                isinstance(staged, dict) and staged.get("digest") == digest:
            # the same signed manifest again: a resume (after a drop or a power cut)
            if self.stage is None or self.stage["digest"] != digest:
                self.stage = {"id": oid, "manifest": m, "digest": digest, "slot": staged["slot"]}
            self.stage["id"] = oid
            self.log("PPMID update: resuming %s" % m["version"])
        else:
            total = 0
            for f in m["files"]:
                total += f[SIZE]
            self.stage = None
            self.need = None
            slot = slots.target_slot(st)
            slots.rmtree(slots.slot_dir(self.root, slot))
            if staged is not None:
                slots.remove(self.root + slots.STAGE)
            free = free_bytes(self.root)
            margin = space_margin(self.relay)
            if free is not None and free < total + margin:
                raise UpdateError(E_UPDATE_SPACE, "the new set needs %d bytes (+%d spare for the journal), the flash has %d free"
                                  % (total, margin, free))
            slots.makedirs(self.root + slots.DIR)
            self.stage = {"id": oid, "manifest": m, "digest": digest, "slot": slot}
            slots.write_json(self.root + slots.STAGE, {"digest": digest, "slot": slot})
            self.log("PPMID update: downloading %s (%d files, %d bytes) into slot %s"
                     % (m["version"], len(m["files"]), total, slot))
        await self.advance()

    async def _image_offer(self, m, digest, oid):
        # an image for the next OTA app partition (ppmid.update.image). The same signed
        # manifest again resumes where this boot's download stands; after a power cut the
        # partition's contents are unknown, so it starts again at byte 0.
        if self.stage is not None and self.stage["digest"] == digest:
            self.stage["id"] = oid
        else:
            self.abandon()
            from ppmid.update.image import ImageWriter
            w = ImageWriter(self.board.image_slots() if hasattr(self.board, "image_slots") else None, m["image"])
            slots.makedirs(self.root + slots.DIR)
            self.stage = {"id": oid, "manifest": m, "digest": digest, "slot": None, "image": w}
            slots.write_json(self.root + slots.STAGE, {"digest": digest, "image": w.label})
            self.log("PPMID update: downloading image %s (%d bytes) into partition %s"
                     % (m["version"], w.size, w.label))
        await self.advance()

    async def advance(self):
        """Find the next byte needed (checking each file that is complete), or switch."""
        w = self.stage.get("image")
        if w is not None:
            self.need = None if w.complete() else (0, w.offset)
            if self.need is None:
                w.check()
            await self.progress()
            if self.need is None:
                self.switching = True
                asyncio.create_task(self.switch())
            return
        files = self.stage["manifest"]["files"]
        i = self.need[0] if self.need is not None else 0
        while i < len(files):
            path = self._slot_file(i)
            have = file_size(path)
            want = files[i][SIZE]
            if have < 0:
                slots.makedirs(path[:path.rfind("/")])
                with open(path, "wb"):
                    pass
                have = 0
            if have > want:
                os.remove(path)  # cannot happen through data(); start that file again
                self.need = (i, 0)
                break
            if have < want:
                self.need = (i, have)
                break
            if file_hash(path) != files[i][SHA256]:
                raise UpdateError(E_UPDATE_HASH, "%s: SHA-256 differs from the manifest's: download refused"
                                  % files[i][PATH])
            i += 1
            self.need = (i, 0)
        if i >= len(files):
            self.need = None
        await self.progress()
        if self.need is None:
            self.switching = True
            asyncio.create_task(self.switch())

    async def data(self, payload):
        if len(payload) < CHUNK_HEADER:
            raise UpdateError(E_UPDATE_CHUNK, "a data message starts with a 6-byte header (file, offset)")
        if self.stage is None or self.switching:
            self.stats["ignored"] += 1
            return  # no offer under way (yet): the sender re-sends the offer
        mv = memoryview(payload)
        i = (mv[0] << 8) | mv[1]
        off = (mv[2] << 24) | (mv[3] << 16) | (mv[4] << 8) | mv[5]
        if self.need is None or (i, off) != self.need:
            self.stats["ignored"] += 1  # a repeat, a gap or a reorder: say again what is needed
            await self.progress()
            return
        if self.stage.get("image") is not None:
            self.stage["image"].write(mv[CHUNK_HEADER:])
            self.stats["chunks"] += 1
            self.stats["bytes"] += len(mv) - CHUNK_HEADER
            await self.advance()
            return
        f = self.stage["manifest"]["files"][i]
        n = len(mv) - CHUNK_HEADER
        if off + n > f[SIZE]:
            raise UpdateError(E_UPDATE_HASH, "%s: more data than its size %d: download refused"
                              % (f[PATH], f[SIZE]))
        with open(self._slot_file(i), "ab") as out:
            out.write(mv[CHUNK_HEADER:])
        self.stats["chunks"] += 1
        self.stats["bytes"] += n
        self.need = (i, off + n)
        if off + n < f[SIZE]:
            await self.progress()
        else:
            await self.advance()

    def abandon(self):
        if self.stage is not None and self.stage["slot"] is not None:
            slots.rmtree(slots.slot_dir(self.root, self.stage["slot"]))
        slots.remove(self.root + slots.STAGE)
        self.stage = None
        self.need = None

    def _now(self):
        # unix seconds for the manifest's expiry, None while the clock is unset: the
        # relay's clock (set by SNTP or a kept RTC), or the port's when there is no relay
        clock = getattr(self.relay, "clock", None)
        if clock is None:
            from ppmid.clock import Clock
            clock = Clock()
        return clock.time() if clock.is_set() else None

    def _idle(self):
        i = self.relay.info() if self.relay is not None else {}
        return not (i.get("queued") or i.get("in_flight") or i.get("to_publish"))

    async def switch(self):
        """Everything is there and checked: wait for the commands in flight (their
        responses go out from this version; the journal keeps the rest for the next),
        point at the new slot (one rename), say so and reset. Run as a task: whatever
        fails before the new set is pointed at puts the pointer back as it was, drops the
        download and says so with the offer's id, so the updater is never left
        "switching" with no status; once it is pointed at, the board resets whatever
        happens to the status."""
        from ppmid.clock import sleep_ms
        st, m = self.stage, self.stage["manifest"]
        before = slots.read_json(self.root + slots.STATE)
        step = [E_UPDATE_FLASH, "pointing at the new set failed"]
        try:
            await self._point(st, m, step)
        except Exception as exc:  # noqa: BLE001 - a task's exception would be lost
            try:
                if before is None:
                    slots.remove(self.root + slots.STATE)
                else:
                    slots.write_json(self.root + slots.STATE, before)
            except OSError as again:
                self.log("PPMID update: the pointer could not be put back: %r" % (again,))
            self.switching = False
            if self.relay is not None:
                self.relay.hold_dispatch = False
            self.abandon()
            await self.refuse(UpdateError(step[0], "%s: %r" % (step[1], exc)), st["id"], m["version"])
            return
        try:
            await self.publish("switching", st["id"], m["version"])
            await sleep_ms(500)  # let the status reach the broker
        finally:
            self.board.reset()

    async def _point(self, st, m, step):
        from ppmid.clock import sleep_ms
        waited = 0
        while not self._idle() and waited < IDLE_WAIT_S * 1000:
            await sleep_ms(200)
            waited += 200
        if self.relay is not None:
            # from here to the reset nothing more goes to the HAN (no await since the idle
            # check): a command accepted meanwhile waits in the journal for the next boot
            self.relay.hold_dispatch = True
            self.relay.journal.sync()
        w = st.get("image")
        if w is not None:
            # the pointer first: a power cut before set_boot() then boots the old image on
            # "probation", which ppmid.update.report sees and rolls back (E_UPDATE_BOOT)
            slots.switch_image(self.root, w.label, m["version"], self.version, st["id"], self.probation[1], m["seq"])
            # the bootloader checks the image here (chip, header, secure boot) and raises
            step[:] = [E_UPDATE_IMAGE, "the bootloader refused to boot the image in partition %s" % w.label]
            w.slots.set_boot(w.label)
            self.log("PPMID update: switching to image %s (partition %s): resetting" % (m["version"], w.label))
        else:
            slots.switch(self.root, st["slot"], m["version"], self.version, st["id"], self.probation[0],
                         self.probation[1], m["seq"])
            self.log("PPMID update: switching to %s (slot %s): resetting" % (m["version"], st["slot"]))
