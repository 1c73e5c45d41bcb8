"""A re-commission ordered over MQTT, end to end (issue #16): the emulated board commissions
its module with the emulated CH as trust centre; `ppmid commission` (host_tools.
commission_order) sends a signed order on ppmid/v1/EUI/update/commission; the gateway
accepts it, leaves the HAN and commissions again (a second join and key establishment at
the CH); the same order again is refused as a replay, an order signed with another key as
unsigned, and neither touches the HAN."""
import sys
import time

import pytest

from host_tools import emulate as E
from host_tools import commission_order as O
from tests.conftest import FIRMWARE_TESTS

sys.path.insert(0, FIRMWARE_TESTS)
import update_vectors as UV  # noqa: E402  (the test operator key: public here)

CODE = "83FED3407A939723A5C639B26916D505C3B5"


def _until(fn, what, timeout=60):
    t0 = time.time()
    while True:
        v = fn()
        if v:
            return v
        assert time.time() - t0 < timeout, "timed out waiting for " + what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e-commission-order"), overrides={"update": {"public_key": UV.PUBLIC}},
                    commissioning={"install_code": CODE}, log=None)
    with e:
        yield e


def _tc(emu):
    return emu.ncp.commissioning_state()["tc_counters"]


def test_signed_order_recommissions_and_replays_are_refused(emu, tmp_path):
    _until(lambda: _tc(emu)["ke_ok"] == 1 and emu.ncp.call(lambda: emu.ncp.ch.tunnel_id is not None),
           "the first commissioning")
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    st = O.push(emu.broker_dir, emu.gateway, str(pem), timeout=30)
    assert st["state"] == "accepted" and st["sequence"] == 1, st
    assert O.last_sequence(emu.broker_dir, emu.gateway) == 1
    _until(lambda: _tc(emu)["ke_ok"] == 2 and emu.ncp.call(lambda: emu.ncp.ch.tunnel_id is not None),
           "the second commissioning")
    tc = _tc(emu)
    assert tc["joins_admitted"] == 2
    # the same order again: a replay; one signed with another key: unsigned
    st = O.push(emu.broker_dir, emu.gateway, str(pem), timeout=30, sequence=1)
    assert st["state"] == "refused" and st["error"]["code"] == "E_ORDER_REPLAY", st
    other = tmp_path / "other.pem"
    other.write_text(UV.OTHER_PRIVATE_PEM)
    st = O.push(emu.broker_dir, emu.gateway, str(other), timeout=30)
    assert st["state"] == "refused" and st["error"]["code"] == "E_ORDER_SIGNATURE", st
    time.sleep(2)
    # the HAN untouched; the host used sequence 2 up when it sent (it cannot tell a refusal
    # that used the number from one that did not, and gaps are harmless)
    assert _tc(emu) == tc and O.last_sequence(emu.broker_dir, emu.gateway) == 2
    rep = emu.commissioning_report()
    assert any(s.startswith("re-commission: ordered by the host tools (order 1)") for s in rep["steps"]), rep
