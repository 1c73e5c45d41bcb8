"""The firmware's DNS codec (ppmid.dns) against dnspython, an independent implementation
(CPython; a test dependency, pyproject.toml [dev]): dnspython reads our queries as one A/IN
question with our id and recursion desired; answers dnspython builds (its own name
compression, CNAME chains, several records, rcodes) give the address and TTL it holds, or
are refused with E_DNS and the rcode."""
import struct

import pytest

from conftest import setup_reference  # noqa: E402

dnsmsg = setup_reference("dns.message")
import dns.flags  # noqa: E402
import dns.name  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdataclass  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.rrset  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from host_tools import mpcompat  # noqa: E402

mpcompat.install()
from ppmid import dns as codec  # noqa: E402
from ppmid.errors import PpmidError  # noqa: E402

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)
NAME = st.lists(LABEL, min_size=1, max_size=5).map(".".join).filter(lambda n: len(n) <= 253)


def response(name, qid, records=(), rcode=0):
    """dnspython's answer to our query for `name`: `records` are (owner, type, ttl, data)."""
    q = dnsmsg.from_wire(codec.query(name, qid))
    r = dnsmsg.make_response(q)
    r.flags |= dns.flags.RA
    r.set_rcode(rcode)
    for owner, rtype, ttl, data in records:
        r.answer.append(dns.rrset.from_text(owner.rstrip(".") + ".", ttl, "IN", rtype, data))
    return r.to_wire()


@settings(max_examples=200, deadline=None)
@given(NAME, st.integers(0, 0xFFFF))
def test_dnspython_reads_our_query(name, qid):
    m = dnsmsg.from_wire(codec.query(name, qid))
    assert m.id == qid and m.flags & dns.flags.RD and not m.flags & dns.flags.QR
    (q,) = m.question
    assert q.name == dns.name.from_text(name) and q.rdtype == dns.rdatatype.A and q.rdclass == dns.rdataclass.IN
    assert not m.answer and not m.authority and not m.additional


@settings(max_examples=200, deadline=None)
@given(NAME, st.integers(0, 0xFFFF), st.integers(0, 0x7FFFFFFF), st.binary(min_size=4, max_size=4))
def test_an_a_record_dnspython_built_is_read(name, qid, ttl, addr):
    text = ".".join(str(b) for b in addr)
    assert codec.answer(response(name, qid, [(name, "A", ttl, text)]), qid, name) == (text, min(ttl, 0x3FFFFFFF))


def test_a_cname_chain_with_dnspythons_compression():
    name = "broker.example.net"
    wire = response(name, 7, [(name, "CNAME", 3600, "mq.cloud.example.net."),
                              ("mq.cloud.example.net", "CNAME", 300, "edge1.cloud.example.net."),
                              ("edge1.cloud.example.net", "A", 900, "198.51.100.7"),
                              ("edge1.cloud.example.net", "A", 900, "198.51.100.8")])
    assert wire.count(b"\xc0") >= 4                       # dnspython compressed the names
    assert codec.answer(wire, 7, name) == ("198.51.100.7", 300)


def test_rcodes_dnspython_sets_are_refused():
    for rcode, word in ((dns.rcode.NXDOMAIN, "NXDOMAIN"), (dns.rcode.SERVFAIL, "SERVFAIL"),
                        (dns.rcode.REFUSED, "REFUSED")):
        with pytest.raises(PpmidError) as exc:
            codec.answer(response("broker.example", 9, rcode=rcode), 9, "broker.example")
        assert exc.value.code == "E_DNS" and word in exc.value.message and exc.value.rcode == rcode


def test_an_answer_with_only_other_types_is_refused():
    wire = response("broker.example", 11, [("broker.example", "AAAA", 60, "2001:db8::1"),
                                           ("broker.example", "TXT", 60, '"hello"')])
    with pytest.raises(PpmidError) as exc:
        codec.answer(wire, 11, "broker.example")
    assert "no A record" in exc.value.message


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_any_damage_to_a_dnspython_answer_is_read_or_refused_never_a_crash(at, junk):
    wire = bytearray(response("broker.example", 5, [("broker.example", "CNAME", 60, "mq.example."),
                                                    ("mq.example", "A", 60, "192.0.2.1")]))
    at = at % len(wire)
    wire[at:at + len(junk)] = junk
    try:
        got = codec.answer(bytes(wire), 5, "broker.example")
    except PpmidError as exc:
        assert exc.code == "E_DNS"
    else:
        assert isinstance(got[0], str) and got[0].count(".") == 3
    # and every prefix of the undamaged answer is refused
    whole = response("broker.example", 5, [("broker.example", "A", 60, "192.0.2.1")])
    with pytest.raises(PpmidError):
        codec.answer(whole[:at % len(whole)], 5, "broker.example")
