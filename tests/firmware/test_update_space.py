# An update that the flash cannot hold is refused before anything is written: a real, small
# LittleFS mount, so MicroPython only (a CPython temp dir has the host's free space).
import json

import asyncio
from ppmid.update import service as S
from ppmid.update import slots
from test_relay_support import fresh_root
from ppmid.relay import journal as J
from test_update_service import EUI, _Board, _Client, REAL_FILES
from update_vectors import PUBLIC, signed_offer

CPYTHON = False


def test_an_update_larger_than_the_free_flash_is_refused():
    root = fresh_root(40)  # 40 x 512-byte blocks: ~20 KB, less than the set + the spare
    with open(root + "/config.json", "w") as f:
        f.write(json.dumps({"gateway": EUI, "update": {"public_key": PUBLIC}}))
    u = S.Updater(_Board(root), None, _Client(), "0.1.0", log=lambda m: None)

    async def go():
        await u.handle(u.topic + "/offer", signed_offer("real", "o"))
    asyncio.run(go())
    st = u.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_SPACE and st["id"] == "o", st
    assert not slots.exists(root + slots.STAGE) and not slots.exists(root + "/upd/a/ppmid")
    assert u.stage is None


class _JournalRelay:
    # the updater reads only the journal's bound (max_bytes)
    def __init__(self, max_bytes):
        self.journal = J.Journal("/nowhere", max_bytes)


def _offer_with_spare(spare, relay):
    """The 'real' offer on a flash left with the set's size + `spare` bytes free."""
    root = fresh_root(400)
    with open(root + "/config.json", "w") as f:
        f.write(json.dumps({"gateway": EUI, "update": {"public_key": PUBLIC}}))
    total = sum(len(b) for b in REAL_FILES)
    with open(root + "/filler", "wb") as f:
        n = S.free_bytes(root) - total - spare
        while n > 0:
            f.write(b"\xff" * min(n, 4096))
            n -= 4096
    u = S.Updater(_Board(root), relay, _Client(), "0.1.0", log=lambda m: None)
    asyncio.run(u.handle(u.topic + "/offer", signed_offer("real", "o")))
    return u.client.last()


def test_the_spare_flash_covers_the_journals_growth_and_compaction():
    # 40 KB spare was enough for the old 16 KB margin; the journal alone may need 64 KB
    # (it grows to 32 KB, and compaction writes a second copy beside it)
    st = _offer_with_spare(40000, _JournalRelay(J.MAX_BYTES))
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_SPACE, st
    assert "spare for the journal" in st["error"]["message"]
    # a journal bounded at 4 KB needs 8 KB: the same flash takes the update
    st = _offer_with_spare(40000, _JournalRelay(4096))
    assert st["state"] == "downloading", st
    assert S.space_margin(None) == 2 * J.MAX_BYTES + S.FS_SLACK   # no relay: the default bound
