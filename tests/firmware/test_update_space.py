# An update that the flash cannot hold is refused before anything is written: a real, small
# LittleFS mount, so MicroPython only (a CPython temp dir has the host's free space).
import json

import asyncio
from ppmid.update import service as S
from ppmid.update import slots
from test_relay_support import fresh_root
from test_update_service import EUI, _Board, _Client
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
