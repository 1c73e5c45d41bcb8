"""host_tools.dns_server (the emulation's resolver) against the firmware's DNS codec
(CPython): two implementations written apart, so each checks the other. Its names answer
with their address, others NXDOMAIN, what is not one A question NOTIMP or FORMERR; a held
server answers nothing; `ppmid emulate --broker-name` refuses what is not a host name
before starting anything."""
import os
import socket
import struct

import pytest

from host_tools import cli
from host_tools import mpcompat
from host_tools.dns_server import DnsServer, build_answer

mpcompat.install()
from ppmid import dns  # noqa: E402
from ppmid.errors import PpmidError  # noqa: E402

NAMES = {"broker.emulated": "127.0.0.1", "Time.Example.": "192.0.2.123"}


def ask(port, query, timeout=5.0):
    # a generous wait: a loaded 2-core host may take a while to schedule the server's thread
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(query, ("127.0.0.1", port))
        try:
            return s.recvfrom(512)[0]
        except socket.timeout:
            return None
    finally:
        s.close()


def qid():
    return struct.unpack(">H", os.urandom(2))[0]


def test_its_names_resolve_through_the_firmware_codec_others_are_nxdomain():
    with DnsServer(NAMES) as srv:
        for name, addr in (("broker.emulated", "127.0.0.1"), ("time.example", "192.0.2.123"),
                           ("BROKER.Emulated.", "127.0.0.1")):
            i = qid()
            assert dns.answer(ask(srv.port, dns.query(name, i)), i, name) == (addr, 60)
        i = qid()
        with pytest.raises(PpmidError) as exc:
            dns.answer(ask(srv.port, dns.query("other.example", i)), i, "other.example")
        assert exc.value.code == "E_DNS" and exc.value.rcode == 3
        assert srv.queries == ["broker.emulated", "time.example", "broker.emulated", "other.example"]


def test_what_is_not_one_a_question_is_refused_with_its_rcode():
    q = bytearray(dns.query("broker.emulated", 7))
    aaaa = bytes(q[:-4]) + b"\x00\x1c\x00\x01"
    assert build_answer(aaaa, {"broker.emulated": "127.0.0.1"})[3] & 15 == 4        # NOTIMP
    garbled = bytes(q[:12]) + b"\x50xx"                                              # label of 80
    assert build_answer(garbled, {})[3] & 15 == 1                                    # FORMERR
    assert build_answer(bytes(q[:5]), {}) is None                                    # not a message
    answer = build_answer(bytes(q), {"broker.emulated": "127.0.0.1"})
    assert build_answer(answer, {}) is None                                          # an answer: no reply


def test_a_held_server_reads_queries_and_answers_none():
    with DnsServer(NAMES, hold=True) as srv:
        assert ask(srv.port, dns.query("broker.emulated", 1), timeout=0.5) is None
        assert srv.queries == ["broker.emulated"] and srv.answered == 0
        srv.hold(False)
        assert ask(srv.port, dns.query("broker.emulated", 2)) is not None


def test_emulate_refuses_a_broker_name_that_is_not_a_host_name(tmp_path, capsys):
    state = tmp_path / "emu"
    for bad in ("127.0.0.1", "bad_name.example", "-x.example", "a..b", "x" * 64 + ".example"):
        rc = cli.main(["emulate", "--state-dir", str(state), "--broker-name=" + bad])
        err = capsys.readouterr().err
        assert rc == 1 and "--broker-name" in err and "is not a host name" in err and "Traceback" not in err, err
        assert not state.exists() or os.listdir(str(state)) == []   # nothing was started
