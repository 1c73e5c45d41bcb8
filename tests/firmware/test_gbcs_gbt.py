# GBT split / reassembly (ppmid.gbcs.gbt): identity, order, duplicates, timeouts, memory bound,
# inconsistent blocks, acknowledgements. Runs under CPython and MicroPython.
from ppmid.gbcs import decode, GbcsError, gbt, build
from ppmid.gbcs.gbt import GbtError
from ppmid.gbcs.reassembly import Reassembler, PENDING_OVERHEAD
from test_gbcs_samples import sample

BIG = "4.13_ECS26a/ECS26a_4.13_ERROR_COMMAND"   # 269 bytes
SMALL = "3.3_CS11/CS11_3.3_ERROR_COMMAND"       # 72 bytes


def list_split(raw, size):
    return list(build.split(raw, size))


def list_transfer(raw, size):
    return list(build.split_for_transfer(raw, size))


def _err(fn, *args):
    try:
        fn(*args)
    except GbtError as exc:
        return exc.code
    raise AssertionError("no GbtError")


def test_split_copies_the_routing_header():
    raw = sample(BIG)
    blocks = list_split(raw, 100)
    assert len(blocks) == 3
    src = decode(raw)
    for i, blk in enumerate(blocks):
        m = decode(blk)
        assert m.form == "gbt" and m.is_gbt
        assert (m.cra, m.counter, m.message_code) == (src.cra, src.counter, src.message_code)
        assert bytes(m.originator) == bytes(src.originator) and bytes(m.recipient) == bytes(src.recipient)
        assert m.block_number == i + 1 and m.block_ack == 0
        assert m.last_block == (i == 2)
        assert m.block_control & 0x80 == (0x80 if i == 2 else 0)
        assert m.date_time is None and m.content_type is None and m.signature is None and m.mac is None
    assert b"".join(bytes(decode(b).block_data) for b in blocks) == raw
    assert [len(decode(b).block_data) for b in blocks] == [100, 100, 69]


def test_a_blocks_routing_header_is_its_messages_with_an_empty_date_time():
    # the split copies the header from the decoded message (gbt), build_block writes it from
    # fields (build): the same bytes, for a message with a date-time and every counter byte set
    raw = build.build_command(0x0102030405060708, bytes(range(1, 9)), bytes(range(11, 19)), 0x12F4,
                              bytes(300), date_time=bytes(range(40, 52)))
    src = decode(raw)
    assert src.date_time is not None
    count, blocks = gbt.blocks_for_transfer(raw, 200, bytearray(3 + 200), 3)
    got = [bytes(b) for b in blocks]
    assert len(got) == count > 1
    size = len(decode(got[0]).block_data)
    for i, blk in enumerate(got):
        want = build.build_block(src.cra, 0x0102030405060708, bytes(range(1, 9)), bytes(range(11, 19)),
                                 0x12F4, i + 1, raw[i * size:(i + 1) * size], last=i == count - 1)
        assert blk == want, i
        assert decode(blk).date_time is None


def test_split_and_reassemble_every_block_size():
    raw = sample(BIG)
    # (block size 1 is covered by the CPython hypothesis test: 269 one-byte blocks fragment a
    # 256K MicroPython heap, which is not what the gateway meets: its blocks are ~1450 bytes)
    for size in (7, 64, 127, 128, 255, 256, 268, 269, 270, 1000):
        blocks = list_split(raw, size)
        r = Reassembler(max_bytes=len(raw) + 32 * len(blocks) + PENDING_OVERHEAD, timeout_ms=1000)
        out = None
        for blk in blocks[::-1]:  # out of order: last first
            assert out is None
            out = r.feed(blk, 0)
        assert out == raw, size
        assert r.pending() == 0 and r.held == 0


def test_split_for_transfer():
    raw = sample(BIG)
    assert list_transfer(raw, 1500) == [raw]
    blocks = list_transfer(raw, 120)
    assert len(blocks) > 1 and all(len(b) <= 120 for b in blocks)
    assert max(len(b) for b in blocks) == 120
    assert gbt.block_overhead(1449) == 51
    assert _err(build.split_for_transfer, raw, 40) == "E_GBT_BLOCK_SIZE"
    assert _err(build.split, raw, 0) == "E_GBT_BLOCK_SIZE"
    assert _err(build.split, list_split(raw, 100)[0], 10) == "E_GBT_NOT_BLOCK"
    for size in range(60, 1600, 7):
        for blk in build.split_for_transfer(sample(BIG) * 1, size) if size < 269 else []:
            assert len(blk) <= size
    for data_len in (0, 1, 127, 128, 255, 256, 1449, 3000):
        blk = build.build_block(1, 1, bytes(8), bytes(8), 1, 1, bytes(data_len))
        assert len(blk) - data_len == gbt.block_overhead(data_len), data_len


def test_blocks_built_in_one_buffer_are_the_same_blocks():
    # the HAN's send path: every block built in one buffer behind room for its own header
    raw = sample(BIG)
    for size in (60, 120, 200, 268):
        want = list_transfer(raw, size)
        buf = bytearray(5 + size)
        buf[:5] = b"HEAD!"
        count, blocks = gbt.blocks_for_transfer(raw, size, buf, 5)
        assert count == len(want) > 1
        got = []
        for blk in blocks:
            assert isinstance(blk, memoryview) and len(blk) <= size
            assert bytes(buf[:5]) == b"HEAD!"  # the room in front is left alone
            got.append(bytes(blk))
        assert got == want, size
        assert Reassembler(len(raw) + 32 * count + PENDING_OVERHEAD, 1000).feed(got[0], 0) is None
    assert _err(gbt.blocks_for_transfer, raw, 120, bytearray(124), 5) == "E_GBT_BLOCK_SIZE"
    # a message that fits goes whole, not into the buffer
    assert gbt.blocks_for_transfer(raw, 1500, bytearray(1505), 5)[0] == 1


def test_duplicates_are_ignored():
    raw = sample(BIG)
    b = list_split(raw, 50)
    r = Reassembler(4096, 1000)
    assert r.feed(b[0], 0) is None
    assert r.feed(b[0], 1) is None
    assert r.feed(b[2], 2) is None and r.feed(b[1], 3) is None
    assert r.feed(b[2], 4) is None
    out = None
    for blk in b[3:]:
        out = r.feed(blk, 5)
    assert out == raw
    # a late duplicate of the delivered message is ignored, until the timeout forgets it
    assert r.feed(b[0], 6) is None and r.pending() == 0
    assert r.feed(b[0], 2000) is None and r.pending() == 1


def test_missing_block_times_out():
    raw = sample(BIG)
    b = list_split(raw, 100)
    r = Reassembler(4096, timeout_ms=500)
    r.feed(b[0], 0)
    r.feed(b[2], 100)
    assert r.expire(599) == [] and r.pending() == 1
    errs = r.expire(600)
    assert len(errs) == 1 and errs[0].code == "E_GBT_TIMEOUT"
    assert "2" in errs[0].message
    assert r.pending() == 0 and r.held == 0
    # the late block now starts a new, incomplete message; it expires silently inside feed()
    assert r.feed(b[1], 700) is None
    assert r.feed(b[0], 5000) is None
    assert r.timed_out and r.timed_out[-1].code == "E_GBT_TIMEOUT"


def test_memory_bound():
    raw = sample(BIG)
    b = list_split(raw, 100)
    r = Reassembler(max_bytes=250 + PENDING_OVERHEAD, timeout_ms=1000)
    r.feed(b[0], 0)                        # 100 + 32, and the message's own overhead
    assert _err(r.feed, b[1], 0) == "E_GBT_MEMORY"
    assert r.pending() == 0 and r.held == 0  # the message was dropped, memory released
    # other messages are bounded together
    r = Reassembler(max_bytes=250 + PENDING_OVERHEAD, timeout_ms=1000)
    r.feed(b[0], 0)
    other = list_split(build.build_command(7, b"\x01" * 8, b"\x02" * 8, 0x19, b"\xd9" + bytes(200)), 100)
    assert _err(r.feed, other[0], 0) == "E_GBT_MEMORY"
    assert r.pending() == 1 and r.held == 132 + PENDING_OVERHEAD


ORIG, RECIP = bytes(range(1, 9)), bytes(range(11, 19))


def test_partial_messages_are_charged_what_the_heap_holds_for_them():
    # review 90 F2: a partial message of one 1-byte block takes about 190 bytes of heap on a
    # 32-bit port (its _Pending, dict, key), not the 33 its block costs: each is charged
    # PENDING_OVERHEAD more, so one-byte partials under new counters stop far sooner
    r = Reassembler(8192, 60000)
    taken = 0
    try:
        for c in range(1, 1000):
            r.feed(build.build_block(0x01, c, ORIG, RECIP, 0x0001, 2, b"x"), 0)
            taken += 1
    except GbtError as exc:
        assert exc.code == "E_GBT_MEMORY"
    each = PENDING_OVERHEAD + 1 + 32
    assert taken == 8192 // each and r.pending() == taken and r.held == taken * each
    assert PENDING_OVERHEAD >= 150   # what the heap really holds, not a token charge
    # the refused one left nothing behind, and a timeout gives every byte back
    assert len(r.expire(60000)) == taken and r.pending() == 0 and r.held == 0


def test_a_block_numbered_past_the_bound_is_refused_and_a_timeout_names_few_blocks():
    # review 90 F1: a block numbered 65535 made the timeout sentence list 65,534 numbers
    # (MemoryError on a board). A number that no message within max_bytes can reach (a
    # byte per block) is refused at once; below it, a timeout names 8 numbers and a count
    r = Reassembler(8192, 60000)
    top = (8192 - PENDING_OVERHEAD) // 33
    for num in (65535, top + 1):
        try:
            r.feed(build.build_block(0x01, 7, ORIG, RECIP, 0x0001, num, b"x", last=True), 0)
        except GbtError as exc:
            assert exc.code == "E_GBT_MEMORY" and ("block number %d" % num) in exc.message, exc.message
        else:
            raise AssertionError("block %d taken" % num)
        assert r.pending() == 0 and r.held == 0
    assert r.feed(build.build_block(0x01, 7, ORIG, RECIP, 0x0001, top, b"x", last=True), 0) is None
    assert r.feed(build.build_block(0x01, 8, ORIG, RECIP, 0x0001, 3, b"x"), 0) is None
    errs = r.expire(60000)
    assert len(errs) == 2 and r.held == 0
    text = {e.message.split("(counter ")[1].split(")")[0]: e.message for e in errs}
    assert text["7"].endswith("missing block(s): 1,2,3,4,5,6,7,8,... (%d missing)" % (top - 1)), text["7"]
    assert text["8"].endswith("missing block(s): 1,2,the last block"), text["8"]


def test_partial_messages_expire_across_a_ticks_wrap():
    # review 90 F3: now_ms is ticks_ms(), which wraps (2**30 ms on an ESP32): a partial
    # touched just before the wrap expires 60 s later all the same, and does not hold the
    # bound for days
    from ppmid.clock import ticks_add
    r = Reassembler(8192, 60000)
    before = ticks_add(0, -1000)
    r.feed(build.build_block(0x01, 9, ORIG, RECIP, 0x0001, 1, b"y" * 3900), before)
    assert r.expire(ticks_add(before, 59999)) == [] and r.pending() == 1
    assert _err(r.feed, build.build_block(0x01, 10, ORIG, RECIP, 0x0001, 1, b"z" * 4000), 0) == "E_GBT_MEMORY"
    errs = r.expire(ticks_add(0, 600000))
    assert len(errs) == 1 and errs[0].code == "E_GBT_TIMEOUT" and r.pending() == 0 and r.held == 0
    assert r.feed(build.build_block(0x01, 10, ORIG, RECIP, 0x0001, 1, b"z" * 4000), ticks_add(0, 600000)) is None
    # a completed message's late-duplicate guard ages across the wrap too
    r = Reassembler(8192, 60000)
    whole = build.build_command(11, ORIG, RECIP, 0x0001, b"w" * 30)
    assert r.feed(list(build.split(whole, 400))[0], before) == whole
    assert r.feed(list(build.split(whole, 400))[0], ticks_add(before, 1000)) is None and r.pending() == 0
    assert r.feed(list(build.split(whole, 400))[0], ticks_add(0, 600000)) == whole


def test_inconsistent_blocks():
    raw = sample(BIG)
    m = decode(raw)
    b = list_split(raw, 100)
    r = Reassembler(4096, 1000)
    r.feed(b[0], 0)
    wrong = bytearray(b[0])
    wrong[-1] ^= 1
    assert _err(r.feed, bytes(wrong), 1) == "E_GBT_INCONSISTENT"  # same number, other data
    r.feed(b[0], 0)
    other_code = build.build_block(1, m.counter, m.originator, m.recipient, 0x0020, 2, b"x")
    assert _err(r.feed, other_code, 1) == "E_GBT_INCONSISTENT"
    r.feed(b[2], 0)                                                 # last block is 3
    late = build.build_block(1, m.counter, m.originator, m.recipient, m.message_code, 4, b"x")
    assert _err(r.feed, late, 1) == "E_GBT_INCONSISTENT"
    zero = build.build_block(1, m.counter, m.originator, m.recipient, m.message_code, 0, b"x")
    assert _err(r.feed, zero, 1) == "E_GBT_INCONSISTENT"
    assert _err(r.feed, raw, 1) == "E_GBT_NOT_BLOCK"


def test_reassembled_garbage_is_refused():
    m = decode(sample(SMALL))
    blk = build.build_block(1, m.counter, m.originator, m.recipient, m.message_code, 1, b"\xdf\x09\x01", last=True)
    r = Reassembler(4096, 1000)
    assert _err(r.feed, blk, 0) == "E_GBT_INCONSISTENT"
    # well-formed inner message whose header differs from the routing header
    inner = sample(SMALL)
    blk = build.build_block(1, m.counter + 1, m.originator, m.recipient, m.message_code, 1, inner, last=True)
    assert _err(r.feed, blk, 0) == "E_GBT_INCONSISTENT"


def test_ack_blocks():
    raw = sample(BIG)
    b = list_split(raw, 100)
    ack = build.build_ack(b[1])
    a = decode(ack)
    src = decode(b[1])
    assert a.form == "gbt" and len(a.block_data) == 0 and a.block_ack == 2
    assert bytes(a.originator) == bytes(src.recipient) and bytes(a.recipient) == bytes(src.originator)
    assert a.counter == src.counter and a.message_code == src.message_code
    r = Reassembler(4096, 1000)
    assert r.feed(ack, 0) is None and r.pending() == 0
    assert _err(build.build_ack, raw) == "E_GBT_NOT_BLOCK"


def _entries_held(r):
    # everything the reassembler keeps between blocks is in its dicts and lists
    return sum(len(v) for v in r.__dict__.values() if isinstance(v, (dict, list)))


def test_acks_with_new_counters_hold_nothing():
    # a CH (or anyone on the tunnel) can send acknowledgements with fresh counters at will:
    # none may stay behind, and a message in progress is not disturbed by them
    raw = sample(BIG)
    m = decode(raw)
    b = list_split(raw, 100)
    r = Reassembler(4096, 1000)
    assert r.feed(b[0], 0) is None
    held = _entries_held(r)
    for i in range(100):
        ack = build.build_block(1, m.counter + 1 + i, m.recipient, m.originator, m.message_code, 0, b"", block_ack=1)
        assert r.feed(ack, i) is None
    assert _entries_held(r) == held and r.pending() == 1
    out = None
    for blk in b[1:]:
        out = r.feed(blk, 200)
    assert out == raw


def test_malformed_block_is_a_gbcs_error():
    blk = list_split(sample(BIG), 100)[0]
    r = Reassembler(4096, 1000)
    for n in range(len(blk)):
        try:
            r.feed(blk[:n], 0)
        except GbcsError as exc:
            assert exc.code.startswith("E_")
        else:
            raise AssertionError("truncated block accepted at %d" % n)
    assert r.pending() == 0


def test_the_send_split_loads_neither_the_builders_nor_the_reassembler():
    # memory (docs/memory.md, session 6): a large command's split is all the gateway needs of
    # GBT to send; build.py's builders and the Reassembler stay out of the heap until used
    import sys
    names = ("ppmid.gbcs.gbt", "ppmid.gbcs.build", "ppmid.gbcs.reassembly")
    pkg = sys.modules["ppmid.gbcs"]
    saved = {n: sys.modules.get(n) for n in names}
    bound = {n: getattr(pkg, n.rpartition(".")[2], None) for n in names}
    for n in names:
        sys.modules.pop(n, None)
        if bound[n] is not None:
            delattr(pkg, n.rpartition(".")[2])
    try:
        fresh = __import__("ppmid.gbcs.gbt", None, None, ["blocks_for_transfer"])
        raw = sample(BIG)
        count, blocks = fresh.blocks_for_transfer(raw, 120, bytearray(125), 5)
        sent = [bytes(b) for b in blocks]
        assert "ppmid.gbcs.build" not in sys.modules
        assert "ppmid.gbcs.reassembly" not in sys.modules
        # (a block's fields are the reassembly's: reading them here loads it)
        datas = [bytes(decode(b).block_data) for b in sent]
        assert count == len(datas) > 1 and b"".join(datas) == raw
    finally:
        for n in names:
            if saved[n] is not None:
                sys.modules[n] = saved[n]
            if bound[n] is not None:
                setattr(pkg, n.rpartition(".")[2], bound[n])


def test_reassembly_reads_block_fields_without_the_host_only_fields():
    # memory (docs/memory.md, session 7): a GBT block's fields are the reassembly's own
    # functions; the message fields only host tools read (message_fields) stay unloaded
    import sys
    from ppmid.modules import unload
    unload("ppmid.gbcs.message_fields")
    raw = sample(BIG)
    r = Reassembler(4096, 1000)
    out = None
    for blk in list_split(raw, 100)[::-1]:
        out = r.feed(blk, 0)
    assert out == raw
    assert "ppmid.gbcs.message_fields" not in sys.modules


def test_error_sentences_are_loaded_for_an_error_and_dropped_after():
    # memory (docs/memory.md, session 10): the split's and the length form's sentences live in
    # ppmid.gbcs.gbt_errors, loaded for an error only; each error still carries its code
    # and the whole sentence with its values, and the module goes again
    import sys
    raw = sample(BIG)
    block = list_split(raw, 100)[0]
    huge = build.build_signed(1, 1, bytes(8), bytes(8), 1, bytes(65500))  # 65,536 bytes or more
    cases = ((gbt.encode_length, (-1,), GbcsError, "E_LENGTH", "negative length -1"),
             (gbt.encode_length, (0x10000,), GbcsError, "E_LENGTH", "length 65536 does not fit the 82 nnnn form"),
             (build.build_block, (1, 1, bytes(8), bytes(8), 1, 0x10000, b"x"), GbtError, "E_GBT_BLOCK_SIZE",
              "block numbers are 16-bit: 65536 / 0"),
             (build.split, (block, 10), GbtError, "E_GBT_NOT_BLOCK",
              "cannot split a GBT block; split the whole message"),
             (build.split, (raw, 0), GbtError, "E_GBT_BLOCK_SIZE", "block data size must be at least 1, not 0"),
             (build.split, (huge, 1), GbtError, "E_GBT_BLOCK_SIZE", "%d blocks needed: more than 65535" % len(huge)),
             (gbt.blocks_for_transfer, (raw, 40), GbtError, "E_GBT_BLOCK_SIZE",
              "transfer size 40 leaves no room for block data"),
             (gbt.blocks_for_transfer, (raw, 120, bytearray(124), 5), GbtError, "E_GBT_BLOCK_SIZE",
              "a buffer of 124 bytes cannot hold a 120-byte block at 5"))
    for fn, args, cls, code, text in cases:
        try:
            fn(*args)
        except GbcsError as exc:
            assert type(exc) is cls and exc.code == code, (type(exc), exc.code)
            assert text is None or exc.message == text, exc.message
        else:
            raise AssertionError("no error from %r" % (args[:1],))
        assert "ppmid.gbcs.gbt_errors" not in sys.modules


def test_every_error_key_names_its_sentence():
    # gbt.py's _S_X = const(i) and gbt_errors' "# i _S_X" comments agree
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the errors run on both above")
    from ppmid.gbcs import gbt_errors
    from sentence_keys import check_keys
    check_keys((gbt,), gbt_errors)
