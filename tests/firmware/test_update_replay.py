# mp-heapsize: 320K  (the service, its stand-ins and config.load in one 64-bit interpreter: at 256K the checkout path's length tipped it into a MemoryError in CI after config.validate grew (session 12); the app's own 32-bit figures are the heap32 bench rows)
# The update's replay floor (docs/update.md "Replay"): the seq of the last manifest switched
# to, kept in the pointer (ppmid.update.slots) and raised by the switch alone. Through the
# update service over test_update_service's stand-in client and board, on a fresh flash
# filesystem; CPython and MicroPython.
import os

import asyncio
from ppmid.update import service as S
from ppmid.update import slots
from ppmid.update.manifest import E_UPDATE_REPLAY
from test_update_service import _Relay, _chunk, _serve, _settle, _setup, _updater
from update_vectors import SEQ, signed_offer


def _flash(root):
    """Every file under /upd with its bytes: what a refusal must leave as it was."""
    out = {}

    def walk(path):
        try:
            names = os.listdir(path)
        except OSError:
            return
        for n in names:
            p = path + "/" + n
            try:
                with open(p, "rb") as f:
                    out[p] = f.read()
            except OSError:
                walk(p)  # a folder
    walk(root + slots.DIR)
    return out


async def _install(u, name, oid):
    """Offer, download and switch; then the reset's boot on probation and the confirm."""
    await u.handle(u.topic + "/offer", signed_offer(name, oid))
    assert u.client.last()["state"] == "downloading", u.client.last()
    await _serve(u)
    await _settle()
    assert u.client.last()["state"] == "switching" and u.board.resets == 1, u.client.last()
    slots.choose(u.root, lambda m: None)  # the boot after the switch's reset
    assert slots.confirm(u.root, u.client.last()["version"])


def test_an_installed_manifest_and_any_signed_before_it_are_replays_and_change_nothing():
    root = _setup()

    async def go():
        await _install(_updater(root, _Relay()), "real", "o1")
        assert slots.floor(slots.state(root)) == SEQ
        u = _updater(root, _Relay())
        u.version = "0.2.0"  # what runs after the switch
        said = []
        # the same manifest again, a newer version signed before it, and a downgrade
        # signed before it (the residual of docs/security.md before the floor)
        for name in ("real", "real-older-seq", "real-downgrade"):
            before = _flash(root)
            await u.handle(u.topic + "/offer", signed_offer(name, name))
            said.append(u.client.last())
            assert _flash(root) == before, name  # a refusal writes nothing
            assert u.stage is None and not u.switching
        # one signed after it is taken, and raises the floor at its switch
        await u.handle(u.topic + "/offer", signed_offer("real-next", "next"))
        said.append(dict(u.client.last()))
        assert slots.floor(slots.state(root)) == SEQ  # not before the switch
        await _serve(u)
        await _settle()
        said.append(u.client.last())
        return said
    said = asyncio.run(go())
    for st, name, seq in zip(said, ("real", "real-older-seq", "real-downgrade"), (SEQ, SEQ - 1, SEQ - 100)):
        assert st["state"] == "refused" and st["id"] == name and st["error"]["code"] == E_UPDATE_REPLAY, st
        assert ("seq %d is not above %d" % (seq, SEQ)) in st["error"]["message"], st
    assert said[3]["state"] == "downloading" and said[3]["version"] == "0.3.0", said[3]
    assert said[4]["state"] == "switching" and said[4]["version"] == "0.3.0", said[4]
    assert slots.floor(slots.state(root)) == SEQ + 1


def test_a_failed_download_leaves_the_same_manifest_free_to_offer_again():
    # the floor is raised by the switch, not when the offer is taken: a download that
    # fails (E_UPDATE_HASH here; a drop, E_UPDATE_FLASH, E_UPDATE_SPACE alike) must not
    # lock its release out
    root = _setup()

    async def go():
        u = _updater(root, _Relay())
        await u.handle(u.topic + "/offer", signed_offer("real", "o1"))
        st = u.client.last()
        await u.handle(u.topic + "/data", _chunk(st["file"], 0, b"X" * 20))  # board.json, wrong bytes
        failed = u.client.last()
        assert not slots.exists(root + slots.STATE) and slots.floor(slots.state(root)) == 0
        await u.handle(u.topic + "/offer", signed_offer("real", "o2"))
        again = dict(u.client.last())
        await _serve(u)
        await _settle()
        return failed, again, u
    failed, again, u = asyncio.run(go())
    assert failed["state"] == "refused" and failed["error"]["code"] == S.E_UPDATE_HASH, failed
    assert again["state"] == "downloading" and again["id"] == "o2", again
    assert u.client.last()["state"] == "switching" and slots.floor(slots.state(root)) == SEQ


def test_a_resume_after_a_power_cut_is_no_replay():
    # the same signed manifest offered again to a new updater (a reboot mid-download)
    # resumes: the floor has not moved
    root = _setup()

    async def go():
        u = _updater(root, _Relay())
        await u.handle(u.topic + "/offer", signed_offer("real", "o1"))
        await _serve(u, limit=1, cut=True)
        u2 = _updater(root, _Relay())
        await u2.handle(u2.topic + "/offer", signed_offer("real", "o2"))
        first = dict(u2.client.last())
        await _serve(u2)
        await _settle()
        return first, u2
    first, u2 = asyncio.run(go())
    assert first["state"] == "downloading" and first["received"] > 0, first
    assert u2.client.last()["state"] == "switching" and slots.floor(slots.state(root)) == SEQ


def test_a_deploy_drops_the_update_but_the_floor_still_refuses_replays():
    # what `ppmid deploy`'s install leaves under /upd (install.forget_updates): a pointer at
    # the root set with the floors alone; the updater reads the floor from it as before
    import install
    root = _setup()

    async def installed():
        await _install(_updater(root, _Relay()), "real", "o1")
    asyncio.run(installed())
    assert slots.state(root)["slot"] == "a" and slots.exists(root + "/upd/a/ppmid")
    # ("applied" reported, as the app does once online: a result not reported yet is kept
    # for the deployed set to report, tests/firmware/test_update_image.py)
    assert slots.state(root)["last"]["reported"] is False
    slots.mark_reported(root)
    install.forget_updates(root)
    assert slots.state(root) == {"slot": "", "seq": SEQ}
    assert sorted(os.listdir(root + slots.DIR)) == ["state.json"]
    assert slots.choose(root, lambda m: None) == (root, None)  # the deployed (root) set, not on probation
    assert slots.summary(slots.state(root)) is None  # nothing for the info to name (ppmid.boot)

    async def go():
        u = _updater(root, _Relay())
        said = []
        for name in ("real", "real-older-seq"):
            before = _flash(root)
            await u.handle(u.topic + "/offer", signed_offer(name, name))
            said.append(dict(u.client.last()))
            assert _flash(root) == before, name
        await u.handle(u.topic + "/offer", signed_offer("real-next", "next"))
        said.append(dict(u.client.last()))
        return said
    said = asyncio.run(go())
    for st, seq in zip(said, (SEQ, SEQ - 1)):
        assert st["state"] == "refused" and st["error"]["code"] == E_UPDATE_REPLAY, st
        assert ("seq %d is not above %d" % (seq, SEQ)) in st["error"]["message"], st
    assert said[2]["state"] == "downloading", said[2]  # signed after it: taken
