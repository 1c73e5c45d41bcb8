# A re-commission ordered by the host tools (ppmid.relay.commission_order): the operator's
# P-256 signature, the gateway, the order's name and format, a sequence that must rise (kept
# on flash: a replay is refused after a reboot too); a gateway without an install code, or
# whose module is being brought up, refuses with its code. The orders are fixed vectors
# (commission_vectors.py). What the order then does to the HAN (leave, commission again) is
# tested over the pty: tests/test_commissioning_rejoin_e2e.py. CPython and MicroPython.
# mp-heapsize: 320K
# (the P-256 check's big integers, as in test_users_update.py)
import asyncio
import json

from ppmid.relay import commission_order as O
from test_relay_support import FlashBoard, RecordingLink, fresh_root, fresh_signature_limits, write_file, read_file
from update_vectors import PUBLIC
import commission_vectors as V


class _Han:
    """What order_recommission reads of ZigbeeHan: its options, whether bring-up is done
    (_up) and its network task slot."""

    def __init__(self, install_code=True, up=True):
        self.commission_settings = {"install_code": "83FED3407A939723A5C639B26916D505C3B5"} if install_code else None
        self._up = up
        self._net_task = None


class _Relay:
    def __init__(self, han):
        self.han = han


def _gateway(public=PUBLIC):
    fresh_signature_limits()
    root = fresh_root()
    write_file(root + "/config.json", json.dumps({"gateway": V.GATEWAY, "update": {"public_key": public}}).encode())
    return root


async def _order(root, han, name, oid="o1", text=None, payload=None):
    link = RecordingLink(V.GATEWAY)
    await O.handle((FlashBoard(root), _Relay(han), link, "0.1.0"), "ppmid/v1/%s/update/commission" % V.GATEWAY,
                   payload if payload is not None else V.order(name, oid, text))
    assert len(link.client.sent) == 1
    topic, st, retained = link.client.sent[0]
    assert topic == "ppmid/v1/%s/update" % V.GATEWAY and not retained and st["kind"] == "commission", st
    # the task the order started is not run here (no ZigbeeHan): stopped before it runs
    if han._net_task is not None:
        han._net_task.cancel()
        await asyncio.sleep(0)
    return st


async def test_signed_order_is_accepted_once_and_its_sequence_kept():
    root = _gateway()
    han = _Han()
    st = await _order(root, han, "first")
    assert st == {"kind": "commission", "state": "accepted", "sequence": 1, "id": "o1"}, st
    assert han._net_task is not None
    assert read_file(root + "/zigbee_order").strip() == b"1"
    # the same order again, and after a "reboot" (a new handler reading the flash): replays
    han = _Han()
    st = await _order(root, han, "first", "o2")
    assert st["state"] == "refused" and st["error"]["code"] == "E_ORDER_REPLAY" and st["id"] == "o2", st
    assert han._net_task is None
    st = await _order(root, han, "second", "o3")
    assert st["state"] == "accepted" and st["sequence"] == 2
    st = await _order(root, _Han(), "first", "o4")
    assert st["error"]["code"] == "E_ORDER_REPLAY"


async def test_refused_orders_change_nothing():
    root = _gateway()
    cases = [("wrong-key", None, None, "E_ORDER_SIGNATURE"),
             ("first", V.SIGNED["first"][0].replace('"sequence":1', '"sequence":9'), None, "E_ORDER_SIGNATURE"),
             ("other-gateway", None, None, "E_ORDER_GATEWAY"),
             ("unknown-order", None, None, "E_ORDER"),
             ("format-2", None, None, "E_ORDER"),
             ("sequence-0", None, None, "E_ORDER"),
             ("no-kind", None, None, "E_ORDER"),
             ("users-kind", None, None, "E_ORDER"),
             ("extra-field", None, None, "E_ORDER"),
             (None, None, b"not json", "E_ORDER"),
             (None, None, b'{"id": "x", "order": "{}"}', "E_ORDER"),
             (None, None, b'{"id": "x", "order": "{}", "signature": "zz"}', "E_ORDER_SIGNATURE"),
             (None, None, b'{"id": 5, "order": "{}", "signature": "00"}', "E_ORDER")]
    for i, (name, text, payload, code) in enumerate(cases):
        han = _Han()
        st = await _order(root, han, name, "r%d" % i, text, payload)
        assert st["state"] == "refused" and st["error"]["code"] == code, (name, payload, st)
        assert st["error"]["message"] and han._net_task is None
    try:
        read_file(root + "/zigbee_order")
        raise AssertionError("a refused order wrote its sequence")
    except OSError:
        pass


async def test_no_update_key_no_install_code_or_busy_module():
    st = await _order(_gateway(public=""), _Han(), "first")
    assert st["error"]["code"] == "E_UPDATE_NO_KEY", st
    root = _gateway()
    st = await _order(root, _Han(install_code=False), "first")
    assert st["error"]["code"] == "E_ORDER_UNSUPPORTED" and "install_code" in st["error"]["message"], st
    # the module being brought up: refused, and that sequence is used up (a new order is needed)
    han = _Han(up=False)
    st = await _order(root, han, "first")
    assert st["error"]["code"] == "E_ORDER_BUSY" and han._net_task is None, st
    assert (await _order(root, _Han(), "first"))["error"]["code"] == "E_ORDER_REPLAY"
    assert (await _order(root, _Han(), "second"))["state"] == "accepted"


async def test_a_newer_order_replaces_a_running_network_task():
    root = _gateway()
    han = _Han()

    async def rejoining():
        await asyncio.sleep(60)
    old = asyncio.create_task(rejoining())
    han._net_task = old
    await asyncio.sleep(0)
    st = await _order(root, han, "first")
    assert st["state"] == "accepted"
    await asyncio.sleep(0)
    try:
        await old
        raise AssertionError("the rejoin task was not cancelled")
    except asyncio.CancelledError:
        pass


async def test_the_signature_is_checked_before_the_gateway_says_what_it_can_do():
    # an unsigned (here: wrongly signed) order must not learn whether this gateway can
    # commission: E_ORDER_SIGNATURE, not E_ORDER_UNSUPPORTED; a gateway with no Zigbee
    # road at all (relay.han None) refuses a signed order as unsupported, not as a bug
    root = _gateway()
    st = await _order(root, _Han(install_code=False), "wrong-key")
    assert st["error"]["code"] == "E_ORDER_SIGNATURE", st
    link = RecordingLink(V.GATEWAY)
    await O.handle((FlashBoard(root), _Relay(None), link, "0.1.0"), "t", V.order("first"))
    st = link.client.sent[0][1]
    assert st["state"] == "refused" and st["error"]["code"] == "E_ORDER_UNSUPPORTED", st
    try:
        read_file(root + "/zigbee_order")
        raise AssertionError("a refused order wrote its sequence")
    except OSError:
        pass


async def test_an_unreadable_sequence_file_refuses_every_order_and_stays_as_it_was():
    # a garbled (or emptied) zigbee_order must not reset the replay floor to 0
    for garbage in (b"", b"\xff\x00garbage", b"1x\n", b"-3\n"):
        root = _gateway()
        write_file(root + "/zigbee_order", garbage)
        han = _Han()
        st = await _order(root, han, "first")
        assert st["state"] == "refused" and st["error"]["code"] == "E_ORDER_FLASH", (garbage, st)
        assert "unreadable" in st["error"]["message"] and han._net_task is None
        assert read_file(root + "/zigbee_order") == garbage
    # an I/O error other than "no such file" (here: a directory in its place) refuses too
    import os
    root = _gateway()
    os.mkdir(root + "/zigbee_order")
    st = await _order(root, _Han(), "first")
    assert st["error"]["code"] == "E_ORDER_FLASH", st
    # a file that holds a number still works, with that number as the floor
    root = _gateway()
    write_file(root + "/zigbee_order", b"1\n")
    assert (await _order(root, _Han(), "first"))["error"]["code"] == "E_ORDER_REPLAY"
    assert (await _order(root, _Han(), "second"))["state"] == "accepted"
