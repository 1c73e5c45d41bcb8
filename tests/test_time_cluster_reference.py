"""Our ZCL Time cluster frames (ppmid.zigbee.timecluster) against zigpy's ZCL codec, both
ways: the Read Attributes we send decodes in zigpy as a read of Time and TimeStatus (the
attribute ids of zigpy's Time cluster), the Read Attributes Response zigpy encodes (UTCTime
and TimeStatus, whose types zigpy takes from its Time cluster) decodes in ours, and the
responses the emulated CH builds decode in zigpy."""
from zigpy.zcl import foundation as f
from zigpy.zcl.clusters.general import Time, TimeStatus
import zigpy.types as t
import pytest

from ppmid.zigbee import timecluster as T
from ppmid.zigbee.tunnel import ZclError

ZCL_2026 = 1796083200 - 946684800
READ = f.GENERAL_COMMANDS[f.GeneralCommand.Read_Attributes].schema
READ_RSP = f.GENERAL_COMMANDS[f.GeneralCommand.Read_Attributes_rsp].schema


def test_the_facts_we_use_are_zigpys():
    assert Time.cluster_id == T.CLUSTER_TIME
    a = Time.AttributeDefs
    assert (a.time.id, a.time_status.id) == (T.ATTR_TIME, T.ATTR_TIME_STATUS)
    assert a.time.type is t.UTCTime
    assert (TimeStatus.Master, TimeStatus.Synchronized, TimeStatus.Master_for_Zone_and_DST,
            TimeStatus.Superseding) == (T.MASTER, T.SYNCHRONIZED, T.MASTER_ZONE_DST, T.SUPERSEDING)
    assert (f.DataTypeId.UTC, f.DataTypeId.map8) == (T.TYPE_UTC, T.TYPE_BITMAP8)


def test_our_read_decodes_in_zigpy():
    for seq in (0, 0x5A, 0xFF):
        hdr, rest = f.ZCLHeader.deserialize(T.read_time(seq))
        assert hdr.frame_control.is_general and not hdr.frame_control.is_manufacturer_specific
        assert hdr.direction == f.Direction.Client_to_Server and hdr.tsn == seq
        assert hdr.command_id == f.GeneralCommand.Read_Attributes
        cmd, rest = READ.deserialize(rest)
        assert list(cmd.attribute_ids) == [Time.AttributeDefs.time.id, Time.AttributeDefs.time_status.id]
        assert rest == b""


def _zigpy_response(seq, records):
    hdr = f.ZCLHeader.general(seq, f.GeneralCommand.Read_Attributes_rsp, direction=f.Direction.Server_to_Client)
    return hdr.serialize() + READ_RSP(status_records=records).serialize()


def _record(attrid, value=None, status=f.Status.SUCCESS):
    if status != f.Status.SUCCESS:
        return f.ReadAttributeRecord(attrid=attrid, status=status)
    kind = f.DataTypeId.UTC if attrid == 0 else f.DataTypeId.map8
    v = t.UTCTime(value) if attrid == 0 else TimeStatus(value)
    return f.ReadAttributeRecord(attrid=attrid, status=status, value=f.TypeValue(type=kind, value=v))


@pytest.mark.parametrize("zcl_time, status", [(ZCL_2026, 3), (0, 0), (0xFFFFFFFE, 0x0F), (ZCL_2026, 1)])
def test_zigpys_response_decodes_in_ours(zcl_time, status):
    frame = _zigpy_response(0x21, [_record(0, zcl_time), _record(1, status)])
    assert T.parse_time(frame, 0x21) == (zcl_time, status)
    frame = _zigpy_response(0x21, [_record(1, status), _record(0, zcl_time)])
    assert T.parse_time(frame, 0x21) == (zcl_time, status)


def test_zigpys_failed_records_are_refused_by_ours():
    frame = _zigpy_response(4, [_record(0, status=f.Status.UNSUPPORTED_ATTRIBUTE), _record(1, 3)])
    with pytest.raises(ZclError, match="read failed"):
        T.parse_time(frame, 4)
    frame = _zigpy_response(4, [_record(0, 0xFFFFFFFF), _record(1, 3)])   # UTCTime's "invalid"
    with pytest.raises(ZclError, match="not set"):
        T.parse_time(frame, 4)


def test_the_emulated_chs_responses_decode_in_zigpy():
    hdr, rest = f.ZCLHeader.deserialize(T.time_response(9, ZCL_2026, T.MASTER | T.SYNCHRONIZED))
    assert hdr.direction == f.Direction.Server_to_Client and hdr.command_id == f.GeneralCommand.Read_Attributes_rsp
    rsp, rest = READ_RSP.deserialize(rest)
    assert rest == b""
    got = {r.attrid: (r.status, r.value.type, r.value.value) for r in rsp.status_records}
    assert got == {0: (f.Status.SUCCESS, f.DataTypeId.UTC, ZCL_2026),
                   1: (f.Status.SUCCESS, f.DataTypeId.map8, TimeStatus.Master | TimeStatus.Synchronized)}
    hdr, rest = f.ZCLHeader.deserialize(T.time_response(9, 0, 0, status=T.STATUS_UNSUPPORTED_ATTRIBUTE))
    rsp, rest = READ_RSP.deserialize(rest)
    assert [(r.attrid, r.status) for r in rsp.status_records] == [(0, f.Status.UNSUPPORTED_ATTRIBUTE),
                                                                   (1, f.Status.UNSUPPORTED_ATTRIBUTE)]
    # and zigpy's read of the Time cluster is what the emulated CH parses
    read = f.ZCLHeader.general(0x77, f.GeneralCommand.Read_Attributes).serialize() + READ(attribute_ids=[0, 1]).serialize()
    assert T.parse_read(read) == (0x77, [0, 1])
