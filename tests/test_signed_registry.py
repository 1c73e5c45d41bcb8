"""The host's records of what it last sent each gateway in a signed document
(host_tools/signed_registry.py): the users registry (users_registry) and the commission
order sequence (commission_order) read and write them through it. A record that cannot be
read is the caller's own error naming the file, never a traceback or a silent zero, and a
write replaces the record whole."""
import json
import os

import pytest

from host_tools import commission_order as O
from host_tools import signed_registry as R
from host_tools import users_registry as U

GW = "00DB1234567890A4"


def test_one_record_per_gateway_and_kind_in_the_keys_folder(tmp_path):
    state = str(tmp_path)
    assert O.registry_path(state, GW) == os.path.join(state, "keys", GW + ".commission.json")
    assert U.registry_path(state, GW) == os.path.join(state, "keys", GW + ".users.json")
    assert R.path(state, GW.lower(), "users") == U.registry_path(state, GW)


def test_missing_records_read_as_nothing_sent_yet(tmp_path):
    state = str(tmp_path)
    assert O.last_sequence(state, GW) == 0
    assert U.read_registry(state, GW) == {"sequence": 0, "users": {"keys": {}, "roles": {}, "legacy_key": True}}
    assert not (tmp_path / "keys").exists()      # reading writes nothing


def test_a_write_replaces_the_record_whole_and_leaves_no_temporary(tmp_path):
    state = str(tmp_path)
    O.write_sequence(state, GW, 3)
    U.write_registry(state, GW, 5, {"keys": {"a": {"role": "r"}}, "roles": {}})
    O.write_sequence(state, GW, 4)
    assert O.last_sequence(state, GW) == 4
    assert U.read_registry(state, GW) == {"sequence": 5, "users": {"keys": {"a": {"role": "r"}}, "roles": {}}}
    assert sorted(os.listdir(tmp_path / "keys")) == [GW + ".commission.json", GW + ".users.json"]
    assert json.loads((tmp_path / "keys" / (GW + ".commission.json")).read_text()) == {"sequence": 4}


def _record(path, content):
    """The record at path holds content (bytes), or a folder stands in its place (None)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if content is None:
        os.mkdir(path)
    else:
        with open(path, "wb") as f:
            f.write(content)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", None])
def test_an_unreadable_record_is_the_callers_error_naming_the_file(tmp_path, content):
    state = str(tmp_path)
    for path, reader, error in ((O.registry_path(state, GW), O.last_sequence, O.CommissionOrderError),
                                (U.registry_path(state, GW), U.read_registry, U.UsersUpdateError)):
        _record(path, content)
        with pytest.raises(error) as e:
            reader(state, GW)
        assert str(e.value).startswith("cannot read %s: " % path), str(e.value)


@pytest.mark.parametrize("text", [b"null", b"[3]", b'{"seq": 3}'])
def test_a_commission_record_without_a_sequence_is_refused(tmp_path, text):
    path = O.registry_path(str(tmp_path), GW)
    _record(path, text)
    with pytest.raises(O.CommissionOrderError) as e:
        O.last_sequence(str(tmp_path), GW)
    assert str(e.value).startswith("cannot read %s: " % path), str(e.value)


@pytest.mark.parametrize("text", [b"null", b'{"sequence": 1}', b'{"sequence": "1", "users": {}}'])
def test_a_users_record_of_another_shape_is_refused(tmp_path, text):
    path = U.registry_path(str(tmp_path), GW)
    _record(path, text)
    with pytest.raises(U.UsersUpdateError) as e:
        U.read_registry(str(tmp_path), GW)
    assert str(e.value) == "%s is not a users registry ({\"sequence\", \"users\"})" % path
