"""`ppmid commission` (host_tools/commission_order.py, cmd_commission.py): the signed text is
what the firmware vectors hold (tests/firmware/commission_vectors.py) and every vector's
signature verifies with the test update key as `cryptography` reads it; the host's sequence
registry; the command's own refusals exit 1 and send nothing. Over MQTT against the emulated
board: tests/test_e2e_commission_order.py."""
import json
import sys

import pytest

from host_tools import commission_order as O
from tests.conftest import FIRMWARE_TESTS

sys.path.insert(0, FIRMWARE_TESTS)
import commission_vectors as V  # noqa: E402
import update_vectors as UV  # noqa: E402

GW = V.GATEWAY


def test_document_is_the_vectors_text_and_signatures_verify():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    assert O.document(GW, 1) == V.SIGNED["first"][0] and O.document(GW.lower(), 2) == V.SIGNED["second"][0]
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(UV.PUBLIC))
    for name, (text, sig) in V.SIGNED.items():
        der = utils.encode_dss_signature(int(sig[:64], 16), int(sig[64:], 16))
        if name == "wrong-key":
            with pytest.raises(InvalidSignature):
                pub.verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))
        else:
            pub.verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))
    key = serialization.load_pem_private_key(UV.PRIVATE_PEM.encode(), None)
    oid, payload = O.signed(O.document(GW, 7), key)
    obj = json.loads(payload)
    assert obj["id"] == oid and obj["order"] == O.document(GW, 7) and len(bytes.fromhex(obj["signature"])) == 64


def test_sequence_registry(tmp_path):
    state = str(tmp_path)
    assert O.last_sequence(state, GW) == 0
    O.write_sequence(state, GW, 3)
    assert O.last_sequence(state, GW) == 3
    with open(O.registry_path(state, GW), "w") as f:
        f.write('{"sequence": "x"}')
    with pytest.raises(O.CommissionOrderError):
        O.last_sequence(state, GW)


def test_commission_cli_errors_exit_1(tmp_path, capsys):
    from host_tools import cli
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    base = ["commission", "--state-dir", str(tmp_path), "--key", str(pem)]
    assert cli.main(base + ["--gateway", GW, "--sequence", "0"]) == 1
    assert cli.main(base + ["--gateway", "nothex"]) == 1
    assert cli.main(base + ["--gateway", GW, "--timeout", "0"]) == 1
    err = capsys.readouterr().err
    assert "--sequence must be 1 or more" in err and "--timeout" in err
    assert O.last_sequence(str(tmp_path), GW) == 0


def test_commission_that_is_not_accepted_ends_in_the_errors_one_line(tmp_path, capsys, monkeypatch):
    # review r5-8: `ppmid: commission order no-answer: E_NO_ANSWER ...`, the code not first
    from host_tools import cli
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    for st, line in (({"state": "no-answer", "error": {"code": "E_NO_ANSWER", "message": "no status within 5s"}},
                      "ppmid: E_NO_ANSWER: commission order no-answer: no status within 5s\n"),
                     ({"state": "refused", "error": {"code": "E_ORDER_BUSY", "message": "busy"}},
                      "ppmid: E_ORDER_BUSY: commission order refused: busy\n"),
                     ({"state": "failed"}, "ppmid: E_FAILED: commission order failed\n")):
        monkeypatch.setattr(O, "push", lambda *a, **k: st)
        assert cli.main(["commission", "--state-dir", str(tmp_path), "--gateway", GW, "--key", str(pem)]) == 1
        cap = capsys.readouterr()
        assert json.loads(cap.out) == st and cap.err == line, cap.err


def test_busy_then_a_plain_resend_is_accepted(tmp_path, monkeypatch):
    """The gateway (the firmware's own ppmid.relay.commission_order, under CPython) uses a
    sequence up on E_ORDER_BUSY and when its answer is lost: the host must not send that
    number again. Stands in for the broker: `send` hands the payload to the firmware."""
    import asyncio
    from host_tools import mpcompat, users_update
    mpcompat.install()
    from ppmid.relay import commission_order as F
    root = tmp_path / "flash"
    root.mkdir()
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    state = str(tmp_path / "broker")

    class Han:
        def __init__(self, up, answer=True):
            self.commission_settings = {"install_code": "83FED3407A939723A5C639B26916D505C3B5"}
            self._up, self._net_task, self.answer = up, None, answer

    han = Han(up=False)

    def gateway(state_dir, eui, payload, oid, user, timeout, status_topic, topic, kind):
        assert kind == "commission" and topic.endswith("/update/commission")

        async def run():
            try:
                _, seq = F.take(str(root), payload, GW, UV.PUBLIC, han)
                st = {"kind": kind, "id": oid, "state": "accepted", "sequence": seq}
            except F.OrderError as exc:
                st = {"kind": kind, "id": oid, "state": "refused", "error": exc.as_dict()}
            if han._net_task is not None:   # no module here: the re-commission is not run
                han._net_task.cancel()
                han._net_task = None
            return st
        st = asyncio.run(run())
        if not han.answer:
            return {"kind": kind, "id": oid, "state": "no-answer", "error": {"code": "E_NO_ANSWER", "message": "x"}}
        return st

    monkeypatch.setattr(users_update, "send", gateway)
    st = O.push(state, GW, str(pem))
    assert st["state"] == "refused" and st["error"]["code"] == "E_ORDER_BUSY", st
    han = Han(up=True, answer=False)   # taken, but its answer lost
    assert O.push(state, GW, str(pem))["state"] == "no-answer"
    han = Han(up=True)
    st = O.push(state, GW, str(pem))
    assert st["state"] == "accepted" and st["sequence"] == 3, st
    assert O.last_sequence(state, GW) == 3
    # an older --sequence sent again: refused as a replay, the registry not lowered
    st = O.push(state, GW, str(pem), sequence=1)
    assert st["error"]["code"] == "E_ORDER_REPLAY" and O.last_sequence(state, GW) == 3, st
