# Boot-only modules stay dropped while the app runs (docs/memory.md, "Session 9, review
# 76's boot-only findings"): the config checks an update offer and a signed users update
# run after boot leave sys.modules exactly as they found it (with or without a "zigbee"
# section, whose check loads the commissioning modules and han_start), and the image slots
# do not keep the ppmid.board package that boot.drop() unloaded. The state is app-like:
# what a running gateway holds loaded, then the boot's drop. CPython and MicroPython.
# mp-heapsize: 1M
import json
import os
import sys

from ppmid.modules import unload
from test_relay_support import PPMID, ESME, GSME, KEY, fresh_root, fresh_signature_limits, write_file
from update_vectors import PUBLIC
import users_vectors as V

INSTALL_CODE = "83FED3407A939723A5C639B26916D505C3B5"


def _after_boot(commissioning=False):
    """What a running gateway holds (its zigbee HAN; on a commissioning gateway the
    commissioning module too), then what boot.drop() unloads."""
    import ppmid.zigbee.han          # noqa: F401
    import ppmid.zigbee.tunnel       # noqa: F401
    import ppmid.update.service      # noqa: F401
    import ppmid.relay.users_update  # noqa: F401
    import ppmid.board.emulated      # noqa: F401
    import ppmid.relay.core          # noqa: F401
    import ppmid.relay.senders       # noqa: F401 (the relay's senders)
    import ppmid.gbcs.validate       # noqa: F401
    from ppmid.boot import BOOT_ONLY
    unload("ppmid.board", under=False)
    unload(*(BOOT_ONLY + ("ppmid.boot", "ppmid.zigbee.han_start")))
    if commissioning:
        import ppmid.zigbee.commission  # noqa: F401
    return BOOT_ONLY


def _gateway(zigbee):
    fresh_signature_limits()
    root = fresh_root()
    os.mkdir(root + "/secrets")
    os.mkdir(root + "/secrets/users")
    write_file(root + "/secrets/users/supplier-a.key", b"s" * 32)
    write_file(root + "/secrets/config.key", V.CONFIG_KEY)
    cfg = {"gateway": PPMID, "han": {"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}]},
           "update": {"public_key": PUBLIC},
           "users": {"keys": {"supplier-a": {"role": "supplier", "originators": ["90B3D51F30010000"]}},
                     "roles": {"supplier": "prepay"}, "legacy_key": False}}
    if zigbee:
        cfg["zigbee"] = {"install_code": INSTALL_CODE}
    write_file(root + "/config.json", json.dumps(cfg).encode())
    return root


def _offer_check(root):
    from ppmid.update import service
    upd, version = service._config(root)
    assert upd["public_key"] == PUBLIC and version == 1


def _users_update(root):
    from ppmid.relay import users_update
    # (its signature check too drops only what it loaded: the update service holds
    # ppmid.update.manifest, which must stay, and ppmid.update.p256 when a test or an
    # update loaded it before)
    oid, seq, senders = users_update.apply(root, V.offer("rotate"), KEY)
    assert oid == "u1" and seq == 1 and senders is not None


def _check(path, zigbee, commissioning=False):
    boot_only = _after_boot(commissioning)
    root = _gateway(zigbee)
    before = sorted(sys.modules)
    path(root)
    after = sorted(sys.modules)
    assert after == before, ("loaded", [m for m in after if m not in before],
                             "dropped", [m for m in before if m not in after])
    held = [m for m in boot_only if m in sys.modules]
    # none of the boot-only modules, but those a commissioning gateway holds
    assert ("ppmid.zigbee.commission" in held) == commissioning, held
    assert all(m.startswith("ppmid.zigbee.") for m in held), held


def test_an_update_offers_config_check_leaves_the_modules_as_they_were():
    _check(_offer_check, zigbee=False)
    _check(_offer_check, zigbee=True)


def test_a_users_update_leaves_the_modules_as_they_were():
    _check(_users_update, zigbee=False)
    _check(_users_update, zigbee=True)


def test_a_commissioning_gateway_keeps_the_commissioning_module_it_holds():
    # the check drops only what it loaded: the module the running commissioning holds stays
    import ppmid.zigbee
    for path in (_offer_check, _users_update):
        _check(path, zigbee=True, commissioning=True)
        held = sys.modules["ppmid.zigbee.commission"]
        assert ppmid.zigbee.commission is held


def test_the_image_slots_do_not_keep_the_board_package_boot_dropped():
    __import__("ppmid.board.emulated")
    E = sys.modules["ppmid.board.emulated"]
    _after_boot()
    assert "ppmid.board" not in sys.modules
    error = E.BoardError

    class Hw:
        ota_files = {}
        ota_running = "ota_0"
        ota_size = 8192

    import io
    Hw.otadata = io.BytesIO(b"")
    slots = E.ImageSlots(Hw)
    before = sorted(sys.modules)
    assert slots.next_update() == ("ota_1", 8192)
    slots.set_boot("ota_1")
    slots.mark_valid()
    assert slots.status()["running"] == "ota_0"
    assert sorted(sys.modules) == before and "ppmid.board" not in sys.modules
    assert E.BoardError is error
