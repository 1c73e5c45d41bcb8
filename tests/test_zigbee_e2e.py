"""The firmware's Zigbee driver (ZigbeeHan, under the MicroPython unix port) against the
NCP + CH emulator over a real pty: commands reach the emulated CH byte-identical, the
meters' responses come back, faults are survived, nothing accepted is lost or doubled."""
import binascii
import json
import os
import subprocess
import sys
import threading
import tty

import pytest

from host_tools import mpcompat
from host_tools.ncp_emulator import NcpEmulator, Faults

mpcompat.install()
from ppmid.gbcs import build  # noqa: E402
from ppmid.gbcs.message import decode  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ESME = "00DB1234567890A0"
GSME = "00DB1234567890A1"
PPMID = "00DB1234567890A4"
SUPPLIER = "90B3D51F30010000"

# The firmware side: a relay stand-in. Sends each command (retrying only what the relay
# retries), collects every incoming message, reports JSON lines on stdout.
CLIENT = r'''
import sys, asyncio, json, binascii, termios
sys.path.insert(0, FIRMWARE)
from ppmid.board.ptyuart import PtyUart
from ppmid.zigbee.han import ZigbeeHan
from ppmid.errors import PpmidError

def out(**kw):
    print("@@" + json.dumps(kw))

async def main():
    opts = json.loads(open(OPTS).read())
    u = PtyUart(PTY)
    # reads must return what is there, not wait for the whole buffer (see docs/zigbee.md)
    a = termios.tcgetattr(u.fileno()); a[6][6] = 0; a[6][5] = 0
    termios.tcsetattr(u.fileno(), termios.TCSANOW, a)
    r, w = u.streams()
    han = ZigbeeHan(r, w, opts.get("config", {}))
    await han.start()
    async def watch():
        last = None
        while True:
            if han.status != last:
                last = han.status
                out(ev="status", status=han.status, detail=han.status_detail)
            han.status_changed.clear()
            await han.status_changed.wait()
    asyncio.create_task(watch())
    got = [0]   # a count, not the messages: 500 of them do not fit a 256K heap
    async def rx():
        while True:
            m = await han.receive()
            got[0] += 1
            out(ev="rx", hex=binascii.hexlify(m).decode())
    asyncio.create_task(rx())
    if opts.get("wait_status"):
        t = 0
        while han.status != opts["wait_status"] and t < opts.get("wait_s", 20) * 10:
            await asyncio.sleep(0.1)
            t += 1
    # read one command at a time: 500 of them at once crowd a 256K heap
    cmds = (binascii.unhexlify(l.strip()) for l in open(CMDS) if l.strip())
    for i, c in enumerate(cmds):
        tries = 0
        while True:
            tries += 1
            try:
                await han.send(None, c)
                out(ev="sent", i=i, tries=tries)
                await asyncio.sleep(opts.get("gap_s", 0))
                break
            except PpmidError as e:
                out(ev="error", i=i, code=e.code, msg=e.message)
                # what the relay retries (relay/core.py RETRYABLE); anything else stays
                if e.code not in ("E_HAN_DOWN", "E_NO_TUNNEL") or tries >= opts.get("tries", 10):
                    break
    want = opts.get("expect_rx", 0)
    t = 0
    while got[0] < want and t < opts.get("rx_wait_s", 20) * 10:
        await asyncio.sleep(0.1)
        t += 1
    # a fragment's ack goes out by its own task (zigbee/han.py _ack_loop), counted
    # rx_fragment_acks once the module took it: the last fragment's is queued as its message
    # is delivered, and may still be on its way. The counters are read once no ack is left
    # (bounded: a module that takes none leaves them queued, and the counts say so)
    t = 0
    while han._ack_count and t < opts.get("ack_wait_s", 5) * 10:
        await asyncio.sleep(0.1)
        t += 1
    import gc
    gc.collect()
    from ppmid.zigbee.han_counters import all_counters
    out(ev="done", status=han.status, module=han.module, counters=all_counters(han))

asyncio.run(main())
'''


def micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(exe):
        pytest.skip("no micropython unix port in the venv")
    return exe


def run_client(emu_kwargs, commands, tmp_path, timeout=120, before=None, reuse=None, **opts):
    """Start the emulator on a fresh pty (or reuse=(emu, slave, path) of an earlier run),
    run the firmware client under MicroPython, return (events, emulator, log path). The
    emulator is stopped by the caller's fixture."""
    log = str(tmp_path / "ch.jsonl")
    if reuse:
        emu, slave, path = reuse
    else:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        path = os.ttyname(slave)
        emu = NcpEmulator(master, log_path=log, **emu_kwargs).start()
    run_client.last = (emu, slave, path)
    with open(tmp_path / "cmds.txt", "w") as f:
        for c in commands:
            f.write(binascii.hexlify(c).decode() + "\n")
    with open(tmp_path / "opts.json", "w") as f:
        json.dump(opts, f)
    script = tmp_path / "client.py"
    script.write_text("FIRMWARE=%r\nPTY=%r\nOPTS=%r\nCMDS=%r\n" % (
        os.path.join(ROOT, "firmware"), path, str(tmp_path / "opts.json"), str(tmp_path / "cmds.txt")) + CLIENT)
    # 320K: the client compiles the firmware from source on the 64-bit port (the compiler's
    # transients beside 64-bit objects); at 256K, since session 10's merges, loading the
    # rejoin code after an earlier boot's commissioning met a MemoryError (a heap at its
    # edge, not the app's need: the 32-bit figures are the heap32 bench rows)
    proc = subprocess.Popen([micropython(), "-X", "heapsize=320K", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        if before:
            before(emu, proc)
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        if not reuse:
            emu.stop()
        pytest.fail("firmware client timed out; emulator %s\nlast output:\n%s" % (emu.stats(), output[-3000:]))
    finally:
        if proc.poll() is None:  # pytest-timeout or a failed `before`: leave no interpreter behind
            proc.kill()
            proc.wait()
    events = [json.loads(line[2:]) for line in output.splitlines() if line.startswith("@@")]
    if not events or events[-1]["ev"] != "done":
        if not reuse:
            emu.stop()
        pytest.fail("firmware client failed:\n%s" % output[-3000:])
    return events, emu, log


@pytest.fixture
def stopper():
    emus = []
    yield emus.append
    for e in emus:
        e.stop()


def command(counter, recipient=ESME, size=40, code=0x0007):
    content = bytes((i * 7 + counter) & 0xFF for i in range(size))
    return build.build_command(counter, bytes.fromhex(SUPPLIER), bytes.fromhex(recipient), code, content)


def test_command_reaches_ch_byte_identical_and_response_returns(tmp_path, stopper):
    cmds = [command(0x1000 + i, ESME if i % 2 == 0 else GSME, size=30 + 40 * i) for i in range(4)]
    events, emu, log = run_client({}, cmds, tmp_path, expect_rx=4)
    stopper(emu)
    assert emu.received == cmds
    rx = [binascii.unhexlify(e["hex"]) for e in events if e["ev"] == "rx"]
    assert len(rx) == 4
    for c, r in zip(cmds, sorted(rx, key=lambda m: decode(m).counter)):
        mc, mr = decode(c), decode(r)
        assert mr.cra == 2 and mr.counter == mc.counter
        assert bytes(mr.originator) == bytes(mc.recipient) and bytes(mr.recipient) == bytes(mc.originator)
    done = events[-1]
    assert done["module"]["ezsp_version"] == 13
    assert done["counters"]["sent"] == 4 and done["counters"]["fragments_tx"] > 0  # > 82 bytes: APS fragments
    entries = [json.loads(line) for line in open(log)]
    assert [e["hex"] for e in entries if e["dir"] == "rx"] == [binascii.hexlify(c).decode().upper() for c in cmds]
    assert len([e for e in entries if e["dir"] == "tx"]) == 4 and all("t" in e for e in entries)


def test_corpus_commands_get_corpus_responses(tmp_path, stopper, gbcs_corpus):
    folder = os.path.join(gbcs_corpus, "1.1.1_ECS01a")
    pairs = []
    for f in sorted(os.listdir(folder)):
        if "_COMMAND_" in f and "SUCCESS" in f:
            read = lambda p: binascii.unhexlify("".join(open(p).read().split()))
            pairs.append((read(os.path.join(folder, f)), read(os.path.join(folder, f.replace("_COMMAND_", "_RESPONSE_")))))
    assert pairs
    # in counter order, as their originator sent them: the emulated meter refuses a
    # counter not above the last it accepted (GBCS anti-replay; file order counts down)
    pairs.sort(key=lambda p: decode(p[0]).counter)
    cmds = [c for c, _ in pairs]
    events, emu, _ = run_client({"corpus_dir": gbcs_corpus}, cmds, tmp_path, expect_rx=len(cmds))
    stopper(emu)
    assert emu.received == cmds
    rx = [binascii.unhexlify(e["hex"]) for e in events if e["ev"] == "rx"]
    assert sorted(rx) == sorted(r for _, r in pairs)


def test_large_message_goes_as_gbt_blocks(tmp_path, stopper):
    big = command(0x2000, ESME, size=3200)
    events, emu, log = run_client({}, [big], tmp_path, expect_rx=1)
    stopper(emu)
    assert emu.received == [big]
    done = events[-1]["counters"]
    assert done["gbt_blocks_tx"] == 3
    blocks = [json.loads(line) for line in open(log) if '"gbt_block": true' in line]
    assert len(blocks) == 3 and all(b["hex"].startswith("DD09") for b in blocks)


def test_ezsp_v14_layout(tmp_path, stopper):
    cmds = [command(0x3000 + i, size=100) for i in range(3)]
    events, emu, _ = run_client({"ezsp_version": 14}, cmds, tmp_path, expect_rx=3)
    stopper(emu)
    assert emu.received == cmds
    assert events[-1]["module"]["ezsp_version"] == 14
    assert len([e for e in events if e["ev"] == "rx"]) == 3
    # v14 names each frame's sender: the trust centre's EUI-64 was read at the bring-up (the
    # emulated module answers getCurrentSecurityState as a real one does), so not one of the
    # CH's frames was dropped as another node's (review 87 F4)
    assert events[-1]["counters"]["rx_unsecured"] == 0


def test_unsupported_module_is_a_status_not_a_hang(tmp_path, stopper):
    events, emu, _ = run_client({"ezsp_version": 7}, [command(1)], tmp_path,
                                config={"send_timeout_s": 3}, tries=1)
    stopper(emu)
    statuses = [e["status"] for e in events if e["ev"] == "status"]
    assert "module-unsupported" in statuses
    detail = [e["detail"] for e in events if e["ev"] == "status" and e["status"] == "module-unsupported"][0]
    assert "v7" in detail
    errors = [e for e in events if e["ev"] == "error"]
    assert errors and errors[0]["code"] == "E_HAN_DOWN"
    assert emu.received == []


def test_held_alerts_delivered_when_tunnel_returns(tmp_path, stopper):
    # the CH closes the tunnel, two alerts arrive meanwhile (held), the tunnel comes back
    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)
        emu.close_tunnel(reopen_after_s=1.0)
        emu.send_alert("ESME")
        emu.send_alert("GSME")
        assert len(emu.ch.held) == 2
    events, emu, log = run_client({}, [], tmp_path, before=before, expect_rx=2, rx_wait_s=20)
    stopper(emu)
    rx = [binascii.unhexlify(e["hex"]) for e in events if e["ev"] == "rx"]
    assert len(rx) == 2 and sorted(decode(m).cra for m in rx) == [3, 3]
    assert emu.ch.held == []


def test_network_down_busy_and_forgotten_tunnel(tmp_path, stopper):
    cmds = [command(0x6000 + i, size=10) for i in range(6)]

    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)
        emu.network_down(1.5)     # stackStatusHandler(down), then up: the CH asks for a new tunnel
        emu.tunnel_busy(1.0)      # and for a second the CH does not acknowledge anything

        def later():
            # the CH forgets the tunnel: the next TransferData gets TransferDataError
            if emu.wait_received(3, 30):
                emu.forget_tunnel(reopen_after_s=0.5)
        threading.Thread(target=later, daemon=True).start()
    events, emu, _ = run_client({}, cmds, tmp_path, before=before, expect_rx=6, gap_s=0.3)
    stopper(emu)
    statuses = [e["status"] for e in events if e["ev"] == "status"]
    assert "network-down" in statuses
    # every command exactly once, in order: the one the CH refused was sent again
    assert emu.received == cmds
    c = events[-1]["counters"]
    assert c["rejected_by_ch"] >= 1 and c["resent"] >= 1 and c["tunnel_opened"] >= 3
    assert len([e for e in events if e["ev"] == "rx"]) == 6


def test_refused_for_now_is_sent_again_and_refused_for_good_is_not(tmp_path, stopper):
    # The module refuses sendUnicast: nothing went on air. NO_BUFFERS (0x18) and
    # NOT_JOINED (0x93, the network went down under the send) mean "not now": the message
    # goes again and reaches the CH once. INVALID_CALL (0x70) will not change: E_DELIVERY.
    cmds = [command(0x6200 + i, size=10) for i in range(3)]

    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)
        emu.refuse_sends(0x18, 2)     # command 0: twice no buffers, then taken
        emu.refuse_sends(0x93, 1)     # command 1: not joined once, then taken

        def later():
            if emu.wait_received(2, 30):
                emu.refuse_sends(0x70, 1)   # command 2: refused for good
        threading.Thread(target=later, daemon=True).start()
    events, emu, _ = run_client({}, cmds, tmp_path, before=before, expect_rx=2, gap_s=0.3, tries=1)
    stopper(emu)
    assert emu.received == cmds[:2]            # each once, in order; the third never
    errors = [e for e in events if e["ev"] == "error"]
    assert [(e["i"], e["code"]) for e in errors] == [(2, "E_DELIVERY")]
    assert "0x70" in errors[0]["msg"]
    assert emu.ncp.counters["send_refused"] == 4
    assert events[-1]["counters"]["send_retries"] >= 3


def test_gbt_message_refused_in_part_is_never_sent_again(tmp_path, stopper):
    # A small message, then one of 3 GBT blocks. The CH forgets the tunnel after the big
    # message's first block: blocks 2 and 3 get TransferDataError. The meter may hold block
    # 1, so the big message is not sent again (nor, by miscounting refused frames as whole
    # messages, the small one before it, which the CH took).
    small = command(0x6100, size=10)
    big = command(0x6101, size=3200)
    cmds = [small, big]

    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)

        def later():
            # fragments: the small message is 1, a ~1500-byte block ~19
            if emu.wait_until(lambda: emu.ch.counters["rx_fragments"] >= 1 + 21, 60):
                emu.forget_tunnel(reopen_after_s=0.5)
        threading.Thread(target=later, daemon=True).start()
    events, emu, _ = run_client({}, cmds, tmp_path, before=before, expect_rx=1, rx_wait_s=5, timeout=180)
    stopper(emu)
    assert emu.received == [small]
    c = events[-1]["counters"]
    assert c["gbt_blocks_tx"] >= 3 and c["rejected_by_ch"] >= 1
    assert c["resend_partial"] == 1 and c["resent"] == 0


def test_bad_input_from_the_module_is_counted_and_survived(tmp_path, stopper):
    from ppmid.zigbee import ezsp as E
    from host_tools.ncp_emulator import ezsp_ncp as N
    cmds = [command(0x8000 + i, size=10) for i in range(4)]

    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)
        emu.send_raw(b"\x00\x01garbage\x7e")                    # garbage between flags
        emu.send_raw(bytes(range(0x20, 0x70)) * 4 + b"\x7e")     # a frame far too long
        emu.send_raw(b"\x25\x42\x21\xa8\x56\xa6\x08\x7e")           # a CRC error
        emu.send_ezsp(N.response_frame(0, 0x0999, b"", callback=0x10))   # unknown callback id
        emu.send_ezsp(N.response_frame(200, N.NETWORK_STATE, b"\x02"))  # a response to nothing
        emu.send_raw(b"\x01\x02\x1a")                             # cancelled partial frame
    events, emu, _ = run_client({}, cmds, tmp_path, before=before, expect_rx=4, gap_s=0.2)
    stopper(emu)
    assert emu.received == cmds
    c = events[-1]["counters"]
    assert c["ash_rx_too_long"] >= 1 and c["ash_rx_crc"] >= 1 and c["ash_rx_cancel"] >= 1
    assert c["ash_rx_too_short"] + c["ash_rx_crc"] >= 2
    assert c["callbacks_unknown"] >= 1 and c["ezsp_orphan_responses"] >= 1
    assert len([e for e in events if e["ev"] == "rx"]) == 4


def test_dropped_frames_and_late_acks(tmp_path, stopper):
    cmds = [command(0x7000 + i, size=5 + i * 9) for i in range(15)]
    faults = Faults(drop_rate=0.03, late_ack_rate=0.2, late_ack_ms=700, seed=7)
    events, emu, _ = run_client({"faults": faults}, cmds, tmp_path, expect_rx=15, tries=20, timeout=300)
    stopper(emu)
    assert emu.received == cmds
    st = emu.stats()["ncp"]
    assert st["frames_dropped"] > 0 and st["acks_delayed"] > 0
    c = events[-1]["counters"]
    assert c["ash_retx"] > 0 and c["ash_ack_timeouts"] > 0


def test_survives_board_process_killed_and_restarted(tmp_path, stopper):
    first = [command(0x4000 + i, size=10) for i in range(50)]

    def kill_midway(emu, proc):
        assert emu.wait_received(3, 30)
        proc.kill()
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    emu = NcpEmulator(master, log_path=str(tmp_path / "ch.jsonl")).start()
    stopper(emu)
    proc_path = os.ttyname(slave)
    try:
        run_client({}, first, tmp_path, before=kill_midway, reuse=(emu, slave, proc_path))
    except pytest.fail.Exception:
        pass  # killed: no "done" line, as expected
    got_before = len(emu.received)
    assert 3 <= got_before < 50
    second = [command(0x5000 + i, size=10) for i in range(3)]
    events, emu, _ = run_client({}, second, tmp_path, reuse=(emu, slave, proc_path), expect_rx=3)
    assert emu.received[got_before:] == second
    assert emu.received[:got_before] == first[:got_before]
    assert emu.stats()["ncp"]["resets_by_host"] == 2


@pytest.mark.parametrize("runs", [True, False], ids=["ncp-ran-it", "ncp-lost-it"])
def test_ncp_takes_the_message_then_goes_silent_never_twice(tmp_path, stopper, runs):
    # The NCP takes the second command's DATA frame (and runs it, or not), then nothing it
    # sends reaches the host until RST: the host's ACK timeouts fail the link and it
    # resets. The host cannot tell whether the CH has the command: E_DELIVERY_UNKNOWN, and
    # the command is never sent again (before the fix it was: the CH got it twice).
    cmds = [command(0x9000 + i, size=10) for i in range(3)]
    faults = Faults(mute_unicast=2, mute_runs=runs)
    events, emu, _ = run_client({"faults": faults}, cmds, tmp_path, expect_rx=2, rx_wait_s=5, tries=10,
                                timeout=120)
    stopper(emu)
    assert emu.received == (cmds if runs else [cmds[0], cmds[2]])
    errors = [(e["i"], e["code"]) for e in events if e["ev"] == "error"]
    assert errors == [(1, "E_DELIVERY_UNKNOWN")]
    assert [e["i"] for e in events if e["ev"] == "sent"] == [0, 2]
    c = events[-1]["counters"]
    assert c["delivery_unknown"] == 1 and c["send_retries"] == 0 and c["ash_link_failures"] >= 1
    assert emu.stats()["ncp"]["muted"] == 1
    assert emu.ncp._unicasts_seen == 3    # one TransferData each, the second never repeated


def test_silence_after_a_middle_aps_fragment_sends_the_message_again_once(tmp_path, stopper):
    # a 3-fragment message: the first fragment is delivered and reported; the NCP takes
    # the second, runs it and goes silent. The CH has two fragments of three: it cannot
    # have the message, so after the reset the whole message goes again, and the CH gets
    # it exactly once; the next message goes normally.
    cmds = [command(0x9100 + i, size=150) for i in range(2)]
    faults = Faults(mute_unicast=2, mute_runs=True)
    events, emu, _ = run_client({"faults": faults}, cmds, tmp_path, expect_rx=2, rx_wait_s=5, tries=10,
                                timeout=120)
    stopper(emu)
    assert emu.received == cmds
    assert [e for e in events if e["ev"] == "error"] == []
    c = events[-1]["counters"]
    n = -(-(len(cmds[1]) + 5) // (82 - 2))   # fragments of one message (ZCL header + tunnel id)
    assert n == 3 and c["send_retries"] >= 1 and c["delivery_unknown"] == 0 and c["ash_link_failures"] >= 1
    # first message: 2 fragments, then all 3 again; the second message: 3
    assert emu.ncp._unicasts_seen == 2 + n + n


def test_silence_after_the_last_aps_fragment_never_resends_the_message(tmp_path, stopper):
    # the NCP takes the LAST fragment, runs it and goes silent: the CH may have the whole
    # message and nothing says so. E_DELIVERY_UNKNOWN, and no fragment of it goes again.
    cmds = [command(0x9200 + i, size=150) for i in range(2)]
    faults = Faults(mute_unicast=3, mute_runs=True)
    events, emu, _ = run_client({"faults": faults}, cmds, tmp_path, expect_rx=2, rx_wait_s=5, tries=10,
                                timeout=120)
    stopper(emu)
    assert emu.received == cmds        # the CH had it; the host could not know
    errors = [(e["i"], e["code"]) for e in events if e["ev"] == "error"]
    assert errors == [(0, "E_DELIVERY_UNKNOWN")]
    c = events[-1]["counters"]
    assert c["send_retries"] == 0 and c["delivery_unknown"] == 1
    assert emu.ncp._unicasts_seen == 3 + 3


def check_at_most_once(cmds, received, events, max_unknown=0.1):
    """Nothing reaches the CH twice, everything in order and byte-identical; a command the
    CH does not have is one whose delivery the HAN reported unknown (the relay waits for
    its response instead of resending), and those are few."""
    assert len(set(received)) == len(received), "a command reached the CH twice"
    it = iter(cmds)
    assert all(any(m == c for c in it) for m in received), "out of order or altered"
    unknown = {e["i"] for e in events if e["ev"] == "error" and e["code"] == "E_DELIVERY_UNKNOWN"}
    missing = {i for i, c in enumerate(cmds) if c not in received}
    assert missing <= unknown, (sorted(missing - unknown), sorted(unknown))
    assert len(unknown) <= len(cmds) * max_unknown, [(e["i"], e["msg"]) for e in events if e["ev"] == "error"]
    return unknown


def fault_run(tmp_path, stopper, n, timeout, to_host, from_host, reset_every, max_unknown=0.1):
    """n commands through a link with byte errors and NCP resets. The relay stand-in
    retries what is safe to retry and never retries E_DELIVERY_UNKNOWN. max_unknown 0:
    the CH must see every command exactly once, in order, byte-identical; otherwise at
    most once, and every one it lacks must have been reported E_DELIVERY_UNKNOWN."""
    cmds = [command(0x10000 + i, ESME if i % 3 else GSME, size=5 + (i * 13) % 60) for i in range(n)]
    faults = Faults(byte_error_rate=to_host, byte_error_rate_from_host=from_host, reset_every=reset_every, seed=n)

    def before(emu, proc):
        emu.send_alert("ESME")
    events, emu, _ = run_client({"faults": faults}, cmds, tmp_path, timeout=timeout, before=before,
                                expect_rx=n + 1, rx_wait_s=8, tries=50)
    stopper(emu)
    if max_unknown == 0:
        errors = [(e["i"], e["code"], e["msg"]) for e in events if e["ev"] == "error"]
        assert emu.received == cmds, ("not exactly once", len(emu.received), len(cmds), errors[:10],
                                      json.dumps(events[-1]["counters"]), json.dumps(emu.stats()["ncp"]))
    else:
        check_at_most_once(cmds, emu.received, events, max_unknown)
    st = emu.stats()["ncp"]
    assert st["bytes_corrupted"] > 0 and st["resets_injected"] > 0
    c = events[-1]["counters"]
    assert c["ash_unsolicited_rstack"] > 0 and c["resets"] > st["resets_injected"] / 2
    assert c["ash_rx_crc"] > 0 and c["ash_tx_nak"] > 0 and c["ash_retx"] > 0
    rx = [e for e in events if e["ev"] == "rx"]
    assert len(rx) > n / 2   # responses and the alert come back too (some may be lost)
    return events, emu


@pytest.mark.timeout(900)
@pytest.mark.parametrize("n, reset_every", [(40, 20), pytest.param(150, 60, marks=pytest.mark.slow)])
def test_faults_n_commands_1pct_both_ways_exactly_once(tmp_path, stopper, n, reset_every):
    # The test: 1% of the bytes damaged in each direction (a bit flipped) and the
    # NCP resetting itself every reset_every host frames; every command reaches the CH exactly
    # once, in order, byte-identical. What makes it hold: the link is retried while the
    # module answers (it NAKs only once per reject condition, so on this line it is often
    # silent through several damaged copies), ACKs go twice on a damaging line, frames
    # the module had not acknowledged before it reset are known not taken, and a message
    # whose last APS fragment was never taken is sent again whole (docs/zigbee.md).
    # make test's run: 40 commands with the NCP resetting every 20 host frames (~5 resets,
    # ~150 damaged frames each way; fault_run checks that they happened), ~14 s here. With
    # resets every 60 frames, 40 commands met one reset and passed with the reset's
    # not-taken frames treated as taken (AshLink._module_reset keeping on_wire); with
    # every 20 they fail on it, as the 150 does. The 150 at every 60 frames (~37 s), the
    # issue's 500 and the 2,000 below run in make soak (more fault patterns: the seed is
    # the command count).
    events, emu = fault_run(tmp_path, stopper, n, 800, to_host=0.01, from_host=0.01, reset_every=reset_every,
                            max_unknown=0)
    assert events[-1]["counters"]["delivery_unknown"] == 0
    print("faults, %d commands: ncp %s, link %s" % (n, emu.stats()["ncp"], events[-1]["counters"]))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_faults_500_commands_1pct_both_ways_exactly_once(tmp_path, stopper):
    # the issue's own size (~2 min here): 500 commands, the same faults and the same checks
    # as the 150 above, over three times as many NCP resets
    events, emu = fault_run(tmp_path, stopper, 500, 1700, to_host=0.01, from_host=0.01, reset_every=60,
                            max_unknown=0)
    assert events[-1]["counters"]["delivery_unknown"] == 0


@pytest.mark.slow
@pytest.mark.timeout(4000)
def test_faults_2000_commands_1pct_both_ways_soak(tmp_path, stopper):
    events, emu = fault_run(tmp_path, stopper, 2000, 3900, to_host=0.01, from_host=0.01, reset_every=60,
                            max_unknown=0)



def _response_for_ppmid(counter, size):
    # a GBCS response from the ESME, larger than one APS frame (82 bytes) many times over
    # but one TransferData (under the PPMID's 1500-byte transfer size)
    return build.make_response(command(counter, ESME, size=40), content=bytes(range(256)) * (size // 256))


def test_every_fragment_of_a_large_response_is_acknowledged(tmp_path, stopper):
    # the CH sends a window of one fragment and the next only once the PPMID acknowledged
    # it (sendReply): the whole message arriving means every fragment was acknowledged
    big = _response_for_ppmid(0x7000, 1024)

    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)
        emu.send_to_ppmid(big)
    events, emu, _ = run_client({}, [], tmp_path, before=before, expect_rx=1, rx_wait_s=30)
    stopper(emu)
    rx = [binascii.unhexlify(e["hex"]) for e in events if e["ev"] == "rx"]
    assert rx == [big]
    n = -(-(len(big) + 5) // (82 - 2))   # fragments: ZCL header (3) + tunnel id (2) + message
    c = emu.ch.counters
    assert c["tx_fragments"] == n and c["rx_fragment_acks"] == n
    assert c["tx_fragment_retries"] == 0 and c["tx_fragment_giveups"] == 0 and c["rx_fragment_acks_stray"] == 0
    fw = events[-1]["counters"]
    assert fw["rx_fragments"] == n and fw["rx_fragment_acks"] == n and fw["rx_fragment_ack_failed"] == 0


def test_unacknowledged_fragment_is_retransmitted_then_given_up(tmp_path, stopper):
    # the PPMID's acks are lost on air: the CH sends the first fragment again after each
    # APS ack timeout, 3 times, then gives the message up; the PPMID never has it. A
    # message after that (acks back) arrives whole.
    big = _response_for_ppmid(0x7100, 512)
    after = _response_for_ppmid(0x7101, 512)
    timeout_s = 0.3

    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)
        emu.call(setattr, emu.ch, "drop_fragment_acks", True)
        emu.send_to_ppmid(big)
        assert emu.wait_until(lambda: emu.ch.counters["tx_fragment_giveups"] == 1, 10)
        emu.call(setattr, emu.ch, "drop_fragment_acks", False)
        emu.send_to_ppmid(after)
    events, emu, _ = run_client({"ch_options": {"aps_ack_timeout_s": timeout_s}}, [], tmp_path, before=before,
                                expect_rx=1, rx_wait_s=30)
    stopper(emu)
    rx = [binascii.unhexlify(e["hex"]) for e in events if e["ev"] == "rx"]
    assert rx == [after]
    n = -(-(len(after) + 5) // (82 - 2))
    c = emu.ch.counters
    assert c["tx_fragment_giveups"] == 1 and c["tx_fragment_retries"] == 3
    assert c["fragment_acks_dropped"] == 4          # the first fragment, sent 4 times
    assert c["tx_fragments"] == 4 + n and c["rx_fragment_acks"] == n
    fw = events[-1]["counters"]
    assert fw["rx_fragments"] == 4 + n and fw["rx_fragment_acks"] == 4 + n and fw["received"] == 1


def test_forged_unencrypted_tunnel_frames_from_0x0000_are_dropped_and_the_tunnel_stays(tmp_path, stopper):
    # a HAN node with the network key but not the CH's link key sends as NWK 0x0000: a
    # TransferData in one APS frame, one in fragments, a CloseTunnel. The module reports them
    # without APS encryption; the firmware delivers none of them, keeps the tunnel, and the
    # CH's own response after them arrives
    from ppmid.zigbee import tunnel as T
    from ppmid.zigbee import tunnel_host as TH
    forged_small = build.make_response(command(0x7300, ESME, size=40), content=b"forged")
    forged_big = _response_for_ppmid(0x7301, 512)
    genuine = build.make_response(command(0x7302, ESME, size=40), content=b"genuine")
    seen = {}

    def before(emu, proc):
        assert emu.wait_until(emu.tunnel_open, 20)
        tid = seen["tid"] = emu.ch.tunnel_id
        emu.forge_from_ch(TH.transfer_data(0x51, tid, forged_small, False))
        emu.forge_from_ch(TH.transfer_data(0x52, tid, forged_big, False))
        emu.forge_from_ch(TH.close_tunnel(0x53, tid))
        emu.send_to_ppmid(genuine)
    events, emu, _ = run_client({}, [], tmp_path, before=before, expect_rx=1, rx_wait_s=30)
    stopper(emu)
    rx = [binascii.unhexlify(e["hex"]) for e in events if e["ev"] == "rx"]
    assert rx == [genuine]
    fw = events[-1]["counters"]
    n = -(-(len(forged_big) + 5) // (82 - 2))   # the fragmented one's APS frames
    assert fw["rx_unsecured"] == 2 + n and fw["received"] == 1
    assert fw["rx_fragments"] == 0 and fw["rx_fragment_acks"] == 0   # none taken, none acknowledged
    assert fw["tunnel_opened"] == 1 and fw["tunnel_closed"] == 0 and emu.ch.tunnel_id == seen["tid"]
    assert events[-1]["status"] == "running"
