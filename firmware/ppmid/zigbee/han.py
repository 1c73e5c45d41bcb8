# The HAN link the relay uses: one object per module, behind a small interface (send,
# receive, status) so that another module family can sit behind the same one later.
# ZigbeeHan supervises an EFR32 NCP: ASH reset, EZSP version check, network, then the
# GB-HRGP tunnel the Communications Hub opens; on any link failure it resets again, forever,
# with backoff. Contract and statuses: docs/zigbee.md.
import asyncio
from micropython import const

from ppmid.errors import PpmidError
from ppmid.errors import E_HAN_DOWN, E_NO_TUNNEL, E_DELIVERY, E_DELIVERY_UNKNOWN, E_HAN_DEST, E_HAN_TOO_BIG
from ppmid.zigbee import ezsp as E
from ppmid.clock import ticks_ms, ticks_diff, ticks_add, sleep_ms, wait_event_ms
from ppmid.zigbee.ashlink import AshError
# the module, not its nine names: each name imported is one more entry in this module's dict
from ppmid.zigbee import tunnel as T

# The link's status (ZigbeeHan.status, docs/zigbee.md) is one of six words, written as
# themselves, as the info reports them (a name for each would be held in this module's dict
# for nothing): "starting", "resetting", "module-unsupported", "network-down", "no-tunnel",
# "running".

_FRAGMENT_OVERHEAD = const(2)  # APS extended header in every fragment
_MAX_FRAGMENTS = const(255)
_CLUSTER_KEY_ESTABLISHMENT = const(0x0800)
_CLUSTER_PREPAYMENT = const(0x0705)  # zigbee/prepayment.py's, not imported: the top-up road loads it
_CLUSTER_TIME = const(0x000A)
# the EZSP callbacks the HAN takes (UG100) and the APS options it sets and reads
# (EmberApsOption): private, as only this module uses them; the NCP's side names them in
# host_tools/ncp_emulator/ezsp_ncp.py (docs/memory.md, session 12)
_MESSAGE_SENT_HANDLER = const(0x003F)
_INCOMING_MESSAGE_HANDLER = const(0x0045)
_APS_ENCRYPTED = const(0x0020)       # APS_OPTION_ENCRYPTION
_APS_RETRY = const(0x0040)           # APS_OPTION_RETRY
_APS_ROUTE_DISCOVERY = const(0x0100)  # APS_OPTION_ENABLE_ROUTE_DISCOVERY
_APS_FRAGMENT = const(0x8000)        # APS_OPTION_FRAGMENT
_ACK_SLOTS = const(4)          # fragment acknowledgements waiting for the NCP (window 1: one)
_RECENT_MAX = const(8)         # confirmed messages held for a resend the CH may ask for
# tunnel replies waiting for _reply_loop (each goes out once the last one's messageSentHandler
# came): the CH's may fill them all, another node's half, so another node cannot keep the
# CH's RequestTunnelResponse out. Beyond, a reply is dropped and counted (replies_dropped):
# a node or an NCP sending faster than our answers go out is not given the heap, nor a
# frame on the HAN per frame it sends (docs/zigbee.md "Tunnel replies")
_REPLY_SLOTS = const(4)
# the constructor: zigbee/han_init.py; the options (DEFAULTS) and the bring-up after a
# module reset: zigbee/han_start.py

# the sentences of the link's failures and rare log lines, by key: their texts are in
# zigbee/han_errors.py, loaded when one is said (_text)
_S_DEST = const(0)
_S_TOO_BIG = const(1)
_S_ON_STATUS = const(2)
_S_NO_TUNNEL = const(3)
_S_HAN_DOWN = const(4)
_S_UNEXPECTED = const(6)
_S_UNSECURED = const(7)
_S_ACK_DROPPED = const(8)
_S_REPLY_STATUS = const(9)
_S_ACK_NOT_SENT = const(10)
_S_BLOCK_DROPPED = const(11)
_S_QUEUE_FULL = const(12)
_S_PARTIAL = const(13)
_S_RESEND_FAILED = const(14)
_S_REPLY_LOST = const(15)
_S_NO_SPLIT = const(16)
_S_TUNNEL_CLOSED = const(17)
_S_NOT_SENT = const(18)
_S_BLOCK_LATE = const(19)
_S_BLOCKS_THEN = const(20)
_S_FRAGMENTS = const(21)
_S_UNICAST = const(22)
_S_NO_RESPONSE = const(23)
_S_MAY_HAVE = const(24)
_S_LINK_FAILED = const(25)
_S_REFUSED = const(26)
_S_TOOK_UNCONFIRMED = const(27)
_S_UNCONFIRMED = const(28)
_S_NOT_ACKED = const(29)
_S_FRAGMENT_NOT_ACKED = const(30)
_S_WRONG_EUI = const(31)
_S_TC_NOT_READ = const(33)
_S_RESEND_LOOP = const(34)

# The link's counters: one list of ints, by these indices. Their names are
# zigbee/han_counters.py's HAN (in this order), which only tests and reports load: as a
# dict's keys they were ~22 names the firmware interned for reports it never makes
# (docs/memory.md, session 10). The last, rx_gbt_timeouts, is counted by
# gbcs/reassembly.py (loaded with the first GBT block) in the list it is handed.
_C_SENT = const(0)
_C_SEND_FAILED = const(1)
_C_SEND_RETRIES = const(2)
_C_FRAGMENTS_TX = const(3)
_C_GBT_BLOCKS_TX = const(4)
_C_RECEIVED = const(5)
_C_RX_DROPPED = const(6)
_C_RX_FRAGMENTS = const(7)
_C_RX_FRAGMENT_TIMEOUTS = const(8)
_C_RX_NOT_TUNNEL = const(9)
_C_RX_GBT_BLOCKS = const(10)
_C_RESETS = const(11)
_C_CALLBACKS_UNKNOWN = const(12)
_C_REJECTED_BY_CH = const(13)
_C_RESENT = const(14)
_C_RESEND_FAILED = const(15)
_C_DELIVERY_UNKNOWN = const(16)
_C_RESEND_PARTIAL = const(17)
_C_RX_FRAGMENT_ACKS = const(18)
_C_RX_FRAGMENT_ACK_FAILED = const(19)
_C_RX_FRAGMENTS_DROPPED = const(20)
_C_RX_UNSECURED = const(21)
_C_REPLIES_DROPPED = const(23)   # (22: rx_gbt_timeouts, gbcs/reassembly.py's)
_C_RESEND_DROPPED = const(24)
_COUNTERS = const(25)
# messages handed to _send_message so far, by every HAN link (one on a board): each held
# message's number, and a refusal's, which is charged only to messages numbered at or
# below its own (review r10-4). A module global, not an attribute: one more on the
# ZigbeeHan instance grew its dict by 96 bytes (47 -> 59 slots)
_sends = 0


class HanError(PpmidError):
    pass


class _NotTaken(Exception):
    """This piece of the message cannot be complete at the CH (nothing of its last APS
    fragment was taken by the module): sending the piece again is safe. for_good: the
    module refused a fragment (sendUnicast status, so it never went on air) and will not
    take it later either (not a network down or a lack of buffers): set where it is raised."""
    for_good = False


def _text(key, args=()):
    # key: the sentence's _S_... name, args its values; its text is
    # ppmid.zigbee.han_errors', loaded for it and dropped again (as str constants here the
    # sentences were held as long as the link). Never raises: the supervisor and the send
    # path fail with it, and a heap or a flash that cannot load the module must not turn a
    # refusal into another error (the text is then its key and values).
    try:
        from ppmid.modules import sentence
        return sentence("ppmid.zigbee.han_errors", key, args)
    except Exception:
        return "han sentence %d %r" % (key, args)


class ZigbeeHan:
    def __init__(self, reader, writer, config=None, log=None, on_status=None):
        # the set-up runs once, at boot: its code is zigbee/han_init.py's (set_up, which says
        # what each attribute is), loaded for it and dropped again, as the bring-up's
        from ppmid.zigbee.han_init import set_up
        set_up(self, reader, writer, config, log, on_status, _COUNTERS, _ACK_SLOTS)

    # ---- public ----------------------------------------------------------------------
    async def start(self):
        if not self._tasks:
            self._tasks = [asyncio.create_task(self.run()), asyncio.create_task(self._reply_loop()),
                           asyncio.create_task(self._resend_loop()), asyncio.create_task(self._ack_loop())]

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        await self._link.close()

    async def receive(self):
        """The next complete incoming GBCS message (bytes), GBT blocks reassembled."""
        while not self._rxq:
            self._queued.clear()
            await self._queued.wait()
        return self._rxq.pop(0)

    async def send(self, dest, data, pace=None):
        """Send one GBCS message to the CH (dest None) through the tunnel. Returns when the
        NCP reported every piece delivered; raises HanError otherwise. pace: the sender's
        pacing and judge, kept with the message: `await pace(data)` before the message goes
        again (the CH refused it) returns True when it may, False when its sender no longer
        wants it (not sent: resend_dropped); `await pace(data, 1)` before this message goes
        after resends returns when it may, and raises when it may not (the relay's:
        relay/core.py Relay.pace)."""
        global _sends
        if dest not in (None, T.CH_NWK):
            raise HanError(E_HAN_DEST, _text(_S_DEST, (dest,)))
        if len(data) > self.max_message:
            raise HanError(E_HAN_TOO_BIG, _text(_S_TOO_BIG, (len(data), self.max_message)))
        data = bytes(data)
        c = self.counters
        went = c[_C_RESENT] + c[_C_RESEND_FAILED] + c[_C_RESEND_DROPPED]   # resends so far (a snapshot: below)
        async with self._send_lock:
            deadline = ticks_add(ticks_ms(), int(self.send_timeout_s * 1000))
            await self._wait_ready(deadline)
            if self._rejected:
                await self._do_resends()  # what the CH refused earlier goes first
            if pace is not None and c[_C_RESENT] + c[_C_RESEND_FAILED] + c[_C_RESEND_DROPPED] != went:
                # resends went, or were dropped, while this one waited (here or in
                # _resend_loop), each at the pace: its sender judges it again (1: a new
                # message): one past its expiry meanwhile raises, and is not sent (review
                # r10-2); and when a resend took a token meanwhile, the one its sender took
                # for it went by, so it waits for one again, or it would follow the last
                # resend at once, beyond the burst (a drop takes none: review r14-3)
                await pace(data, 1)
            # its own send_timeout_s starts now, not before the paced wait (review r10-3)
            deadline = ticks_add(ticks_ms(), int(self.send_timeout_s * 1000))
            _sends += 1
            try:
                await self._send_message(data, deadline)
            except HanError:
                self.counters[_C_SEND_FAILED] += 1
                self._remember(None, None)
                raise
            self.counters[_C_SENT] += 1
            self._remember(data, pace)

    async def send_zcl(self, *args):
        """send_zcl(dest, cluster, endpoint, zcl, judge=None): one ZCL frame to a HAN
        device directly, not through the tunnel (a top-up to the ESME):
        ppmid.zigbee.direct's, loaded with the first one."""
        from ppmid.zigbee.direct import send_zcl
        await send_zcl(self, *args)

    # ---- status ----------------------------------------------------------------------
    def _set_status(self, status, detail=""):
        if status == self.status and detail == self.status_detail:
            return
        self.status = status
        self.status_detail = detail
        self._logf("status %s %s", status, detail)
        if status == "running":
            self._ready_event.set()
        else:
            self._ready_event.clear()
        self.status_changed.set()
        if self.on_status:
            try:
                self.on_status(status, detail)
            except Exception as exc:
                self._logf(_S_ON_STATUS, exc)

    def _update_status(self):
        if not self._up or not self._link.connected:
            return
        if not self._net_up:
            self._set_status("network-down")
        elif self.tunnel.tunnel_id is None:
            self._set_status("no-tunnel", "waiting for the CH to open the GB-HRGP tunnel")
        else:
            self._set_status("running")

    def _logf(self, fmt, *args):
        # fmt: a format and its values, or the key (_S_..., an int) of a rare line's
        # sentence, whose text (_text) is loaded only when there is a log
        if self._log:
            self._log("han: " + (_text(fmt, args) if isinstance(fmt, int) else fmt % args if args else fmt))

    async def _wait_ready(self, deadline):
        while self.status != "running":
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                self.counters[_C_SEND_FAILED] += 1
                if self.status == "no-tunnel":
                    raise HanError(E_NO_TUNNEL, _text(_S_NO_TUNNEL))
                raise HanError(E_HAN_DOWN, _text(_S_HAN_DOWN, (self.status, self.status_detail)))
            await wait_event_ms(self._ready_event, min(left, 1000))

    # ---- supervisor ------------------------------------------------------------------
    async def run(self):
        backoff = 500   # ms
        while True:
            self._set_status("resetting" if self.counters[_C_RESETS] else "starting")
            ok = False
            try:
                await self._bring_up()
                ok = True
                await self._link.failed.wait()
            except Exception as exc:  # a failed bring-up or link, or a bug below: the
                # supervisor outlives any (a cancel is no Exception: it passes). Its verdict
                # is zigbee/han_start.py's, loaded for it: the ms to wait for a module that
                # cannot be used (the status says so), else 0 (the backoff below)
                try:
                    from ppmid.zigbee.han_start import failed
                    wait = failed(self, exc)
                except Exception:  # a heap or a flash that cannot load it: said as a bug
                    # would be, and reset again after the backoff
                    self._logf(_S_UNEXPECTED, exc)
                    wait = 0
                if wait:
                    await sleep_ms(wait)
                    continue
            self._link_lost()
            if ok:
                backoff = 500
            await sleep_ms(backoff)
            backoff = min(int(self.backoff_max_s * 1000), backoff * 2)

    def _on_link_fail(self, err):
        # synchronous: senders must see the new status before they run again
        self._link_lost()
        self._set_status("resetting", err.message)

    def _link_lost(self):
        self._net_up = False
        self._up = False
        self._ready_event.clear()
        for w in self._sent.values():
            w.set()

    async def _bring_up(self):
        self.counters[_C_RESETS] += 1
        self._net_up = False
        self._up = False
        # a reset module rejoins: the CH forgets our tunnel and asks for a new one
        self.tunnel.close("module reset")
        code = await self._link.reset()
        from ppmid.zigbee.han_start import bring_up
        await bring_up(self, code)   # zigbee/han_start.py drops itself after it

    # ---- callbacks from the NCP (synchronous) ----------------------------------------
    def _ready(self):
        return len(self._rxq) < self.rx_queue

    def _on_frame(self, frame):
        self._ezsp.on_frame(frame)

    def _on_callback(self, fid, p):
        v = self._ezsp.version
        if v is None:
            self.counters[_C_CALLBACKS_UNKNOWN] += 1
            return
        if self.commission is not None and self.commission.on_callback(fid, p):
            return
        if fid == _MESSAGE_SENT_HANDLER:
            tag, status = E.parse_message_sent(v, p)
            w = self._sent.get(tag)
            if w is not None:
                w.status = status
                w.set()
            else:
                self.counters[_C_CALLBACKS_UNKNOWN] += 1
        elif fid == _INCOMING_MESSAGE_HANDLER:
            self._incoming(E.parse_incoming(v, p))
        elif fid == E.STACK_STATUS_HANDLER:
            up = E.parse_stack_status(v, p)
            if up is not None:
                was_up = self._net_up
                self._net_up = up
                if up:
                    self._net_event.set()
                    if v >= 14:        # ezsp.LAYOUT_V14: the module names a frame's sender
                        if not was_up and self._tc_eui:
                            # a join since the last read (a rejoin, a re-commission onto
                            # another CH, both run with _up False): its trust centre is
                            # read again (review r6-2, r9-1). Not on a repeated NETWORK_UP
                            # (the CH's frames of the read would be dropped, r9-4), nor
                            # while a read is pending (b"": the bring-up reads at its end)
                            self._tc_eui = None
                        self._want_tc()
                else:
                    # the CH will re-request the tunnel when we are back on the network
                    self.tunnel.close("network down")
                    if self._up and self.commission_settings is not None:
                        # a trust-centre rejoin if it stays down (zigbee/rejoin.py, loaded now)
                        from ppmid.zigbee.rejoin import network_lost
                        network_lost(self)
                self._update_status()
        else:
            self.counters[_C_CALLBACKS_UNKNOWN] += 1

    def _incoming(self, m):
        aps = m["aps"]
        if aps["cluster"] == _CLUSTER_KEY_ESTABLISHMENT and self.commission is not None:
            self.commission.on_ke(m)   # it takes the CH's alone (sender, profile, EUI-64)
            return
        cluster = aps["cluster"]
        # Smart Energy puts the Tunneling and Prepayment clusters under APS security with a
        # link key (SE 1.x 5.4.6; EmberZNet's application framework drops such a frame that
        # came without it). The network key, which every HAN node holds, is enough to send
        # as NWK 0x0000 or as the meter, not to APS-encrypt as them: a frame without it must
        # not feed, open or close the tunnel, nor end a top-up (a forged "duplicate" would
        # make the gateway refuse that UTRN for good). The CH's Time answer too: our read
        # goes APS-encrypted, so the CH's answer does, and a forged clock would defeat the
        # commands' expiry
        if (cluster == T.CLUSTER_TUNNELING or cluster == _CLUSTER_PREPAYMENT or cluster == _CLUSTER_TIME) \
                and not aps["options"] & _APS_ENCRYPTED:
            self.counters[_C_RX_UNSECURED] += 1
            if self.counters[_C_RX_UNSECURED] == 1:
                self._logf(_S_UNSECURED, cluster, m["sender"])
            return
        eui = m.get("eui64")
        if eui is not None and eui != self._tc_eui and (cluster == T.CLUSTER_TUNNELING or cluster == _CLUSTER_TIME):
            # at v14 the module names the sender's EUI-64 (the one whose link key decrypted
            # the frame): the encryption bit alone says "some link key", and another node
            # holding one may send as NWK 0x0000. Only the trust centre's are the CH's;
            # a Prepayment answer is held to the meter's EUI-64 by the top-up road. Counted
            # with the frames that lack APS encryption (not secured by the CH's link key
            # either; a counter of its own held ~0.1 KB more), the first of them logged
            self._want_tc()
            self.counters[_C_RX_UNSECURED] += 1
            if self.counters[_C_RX_UNSECURED] == 1:
                self._logf(_S_WRONG_EUI, cluster, m["sender"])
            return
        if cluster == _CLUSTER_TIME and self.on_time is not None:
            self.on_time(m)            # it takes the CH's alone (chclock.accept)
            return
        if cluster != T.CLUSTER_TUNNELING and self.on_zcl is not None and aps["profile"] == T.PROFILE_SE:
            self.on_zcl(m["sender"], cluster, m["message"], eui)
            return
        if aps["profile"] != T.PROFILE_SE or cluster != T.CLUSTER_TUNNELING:
            self.counters[_C_RX_NOT_TUNNEL] += 1
            return
        msg = m["message"]
        if aps["options"] & _APS_FRAGMENT:
            if not self.tunnel.from_ch(m["sender"]):
                return  # only the CH uses the tunnel; this would push out the CH's reassembly
            msg = self._defragment(m["sender"], aps, msg)
            if msg is None:
                return
        sender = m["sender"]
        replies, data = self.tunnel.handle(sender, msg)
        for r in replies:
            if len(self._replies) >= (_REPLY_SLOTS if sender == T.CH_NWK else _REPLY_SLOTS // 2):
                self.counters[_C_REPLIES_DROPPED] += 1   # (_REPLY_SLOTS: why)
                continue
            self._replies.append((sender, r))
            self._queued.set()
        while self.tunnel.events:
            ev = self.tunnel.events.pop(0)
            self._logf("tunnel %s %r", ev[0], ev[1])
            if ev[0] == "error" and ev[1][0] in (T.NO_SUCH_TUNNEL, T.WRONG_DEVICE) and ev[1][1] is not None:
                tid = ev[1][1]
                # the CH refused a TransferData of ours: it never took that message. Kept
                # only for a tunnel a held message (or the one being sent) went through:
                # another names nothing to send again, and would grow _rejected by a key
                # per tunnel id named (any u16), so it holds at most _RECENT_MAX + 1
                # With the count, the number of the newest message sent when it came: it
                # names a frame the CH had then, never one sent after it (a resend that was
                # waiting for its pace meanwhile: review r10-4)
                self.counters[_C_REJECTED_BY_CH] += 1
                if tid == self._sent_tid or any(r[0] == tid for r in self._recent):
                    k = self._rejected.get(tid)
                    self._rejected[tid] = [k[0] + 1 if k else 1, _sends]
                    self._queued.set()
        self._update_status()
        if data is not None:
            self._deliver(data)

    def _want_tc(self):
        # the trust centre's EUI-64 not known (nor being read): read it, in a task of its own
        if self._tc_eui is None:
            self._tc_eui = b""
            try:
                from ppmid.zigbee.han_start import read_trust_centre
                asyncio.create_task(read_trust_centre(self))
            except Exception as exc:  # a load on use that failed (a cut-up heap): unknown
                # again, so the next frame tries again (b"" for good: the tunnel never opens)
                self._tc_eui = None
                self._logf(_S_TC_NOT_READ, exc)

    def _queue_ack(self, sender, aps):
        if self._ack_count >= _ACK_SLOTS:
            # the NCP is not taking our acks: the sender will repeat the fragment anyway
            self.counters[_C_RX_FRAGMENT_ACK_FAILED] += 1
            self._logf(_S_ACK_DROPPED, self._ack_count)
            return
        at = (self._ack_head + self._ack_count) % _ACK_SLOTS * E.SEND_REPLY_ACK_LEN
        E.fragment_ack_into(self._acks[at:at + E.SEND_REPLY_ACK_LEN], sender, aps)
        self._ack_count += 1
        self._queued.set()

    async def _ack_loop(self):
        while True:
            while not self._ack_count:
                self._queued.clear()
                await self._queued.wait()
            at = self._ack_head * E.SEND_REPLY_ACK_LEN
            buf = self._acks[at:at + E.SEND_REPLY_ACK_LEN]
            try:
                status = await self._ezsp.send_reply(buf)
                if status:
                    raise HanError(E_DELIVERY, _text(_S_REPLY_STATUS, (status,)))
                self.counters[_C_RX_FRAGMENT_ACKS] += 1
            except Exception as exc:  # an ack lost is a fragment repeated, never a stop (a
                # cancel is no Exception: it passes)
                self.counters[_C_RX_FRAGMENT_ACK_FAILED] += 1
                self._logf(_S_ACK_NOT_SENT, exc)
            self._ack_head = (self._ack_head + 1) % _ACK_SLOTS
            self._ack_count -= 1

    def _defragment(self, sender, aps, data):
        self.counters[_C_RX_FRAGMENTS] += 1
        group, key = aps["group"], sender << 8 | aps["sequence"]
        index, count = group & 0xFF, group >> 8
        now = ticks_ms()
        f = self._frag
        # a partial message left days ago reads negative on a 32-bit port: stale as well
        if f is not None and not 0 <= ticks_diff(now, f[1]) <= 10000:  # f[1]: its start
            self.counters[_C_RX_FRAGMENT_TIMEOUTS] += 1
            f = self._frag = None
        # One message is reassembled at a time, keyed by (sender, APS counter): on air every
        # fragment of one message carries its counter, and EmberZNet's receivers key by the
        # pair too. A fragment 0 under another counter starts over: the sender has moved on
        # (a new message, or the same one again under a new counter after it gave the first
        # up: our 10 s outlast its APS retries, so waiting the partial out, as EmberZNet's
        # one-message receiver does, would lose the new one too). A later fragment under
        # another counter is not that message's: dropped and not acknowledged, so its
        # sender repeats it or gives its message up, never has it taken for delivered.
        done = self._frag_done
        if done is not None and done[0] == key and 0 <= ticks_diff(now, done[1]) <= 10000:
            # a fragment of the message just completed, again: our ack of it was lost (with
            # window 1 only the last one's can be, the sender waits for each ack). It is
            # acknowledged again, or the sender's APS retries run out and it takes the
            # message for failed; it is not delivered a second time
            self._queue_ack(sender, aps)
            return None
        # (a fragment 0 unlike the held one under the same counter: another message, the
        # sender's counter having come round, never joined to the first one's pieces)
        if f is None or f[0] != key or not index and (count != len(f[2]) or data != f[2][0]):
            if f is not None:
                self.counters[_C_RX_FRAGMENTS_DROPPED] += 1
            if index or not count:
                return None
            if (count - 1) * len(data) > self.tunnel.max_incoming + 7:
                # larger than the tunnel takes (a TransferData: a 5-byte ZCL header at most,
                # the tunnel id, max_incoming bytes): never held, not acknowledged; as any
                # fragment 0, it ends the partial before it (the sender has moved on)
                self.counters[_C_RX_FRAGMENTS_DROPPED] += 1
                self._frag = None
                return None
            f = self._frag = (key, now, [None] * count)
        # every fragment taken is acknowledged, a repeated one too (our ack may have been
        # lost): the sender sends no more of the message until it has the ack
        self._queue_ack(sender, aps)
        pieces = f[2]
        if index < len(pieces):
            pieces[index] = data
            held = 0        # the bytes held, bounded by what the tunnel takes
            for p in pieces:
                if p is not None:
                    held += len(p)
        if index >= len(pieces) or held > self.tunnel.max_incoming + 7:
            # outside what fragment 0 announced, or more than the tunnel takes: the
            # message cannot be whole, or would be refused. (The count itself is read from
            # fragment 0 only: on air a later fragment carries its index alone, so its high
            # byte is no check.)
            self.counters[_C_RX_FRAGMENTS_DROPPED] += 1
            self._frag = None
            return None
        if None in pieces:
            return None
        self._frag = None
        self._frag_done = (key, now)
        return b"".join(pieces)

    def _deliver(self, data):
        if len(data) >= 2 and data[0] == 0xDD and data[1] == 0x09:
            self.counters[_C_RX_GBT_BLOCKS] += 1
            try:
                if self._gbt is None:
                    from ppmid.gbcs.reassembly import Reassembler
                    # (a message whose blocks stop arriving: the log says so, counted
                    # rx_gbt_timeouts, by the reassembly's code, not resident)
                    self._gbt = Reassembler(self.max_message, 60000, self._logf, self.counters)
                out = self._gbt.feed(data, ticks_ms())
            except ImportError:
                out = data  # no GBT support in this build: the relay sees the block itself
            except PpmidError as exc:
                self._logf(_S_BLOCK_DROPPED, exc)
                return
            if out is None:
                return
            data = out
        if len(self._rxq) >= self.rx_queue:
            self.counters[_C_RX_DROPPED] += 1
            self._logf(_S_QUEUE_FULL)
            return
        self.counters[_C_RECEIVED] += 1
        self._rxq.append(bytes(data))
        self._queued.set()

    # ---- messages the CH refused (TransferDataError): sent again, in order -----------
    def _remember(self, data, pace):
        # data None: a send that failed. The CH may have its last TransferData and refuse
        # it: a refusal is charged to the newest messages of its tunnel, so the message
        # holds its place there, or an older, delivered one would reach the HAN again
        if data is None and not self._sent_pieces:
            return  # nothing of it is at the CH
        now = ticks_ms()
        self._recent.append((self._sent_tid, data, now, self._sent_pieces, pace, _sends))
        self._prune(now)

    def _prune(self, now):
        # a body is held only for its window (up to max_message bytes each): after it, the
        # CH does not ask for the message again
        window = int(self.resend_window_s * 1000)
        while len(self._recent) > _RECENT_MAX or (self._recent and ticks_diff(now, self._recent[0][2]) > window):
            self._recent.pop(0)

    async def _resend_loop(self):
        while True:
            try:
                if not self._rejected:  # (a refusal that came before this task ran is not lost)
                    self._queued.clear()
                    if self._recent:
                        # wake when the oldest body's window ends, to let it go then and not
                        # at the next send, which may be long after
                        left = int(self.resend_window_s * 1000) - ticks_diff(ticks_ms(), self._recent[0][2])
                        if not await wait_event_ms(self._queued, max(left, 0) + 1) and not self._rejected:
                            self._prune(ticks_ms())  # (a refusal waiting for its turn keeps its body)
                    else:
                        await self._queued.wait()
                    continue  # woken by a refusal, or by what another taker was queued: look again
                await sleep_ms(50)  # let the errors for one burst arrive together
                async with self._send_lock:
                    await self._do_resends()
            except Exception as exc:  # the whole turn (review r9-3): its wait allocates too
                # (an alarm task each on MicroPython), and _do_resends' lists. Said, and the
                # task goes on after a pause (no spin): a refusal still waiting is sent
                # again, and held bodies are still let go when their window ends
                self._logf(_S_RESEND_LOOP, exc)
                await sleep_ms(100)

    async def _do_resends(self):
        """Under the send lock: send again, oldest first, the messages the CH refused."""
        global _sends
        todo = []
        for tid in self._rejected:
            # the CH refused the newest k TransferData frames of this tunnel sent before the
            # refusals came (up to message number n): the messages they make up, newest
            # first; one refused only in part (some of its GBT blocks were taken) is never
            # sent again: the meter may have those blocks
            k, n = self._rejected[tid]
            i = len(self._recent)
            while k > 0 and i:
                i -= 1
                tunnel_id, message, sent_ms, pieces, pace, no = self._recent[i]
                if tunnel_id != tid or no > n:
                    continue
                if k < pieces:
                    self.counters[_C_RESEND_PARTIAL] += 1
                    self._recent.pop(i)
                    self._logf(_S_PARTIAL, k, pieces)
                    break
                k -= pieces
                if message is None:
                    self._recent.pop(i)  # its sender had the failure already
                else:
                    todo.append(id(self._recent[i]))
        self._rejected = {}
        # sent again in the order they were sent first: _recent's
        again = []
        kept = []
        for r in self._recent:
            if id(r) in todo:
                again.append(r)
            else:
                kept.append(r)
        self._recent = kept
        for r in again:
            try:
                # at the relay's pace, as any command (review r6-4: a CH that refuses, or a
                # node forging its refusals, had each refusal send up to 8 messages at once).
                # Its sender may say no (False): its command is over meanwhile (answered,
                # timed out, expired) or the relay sends a copy of it itself (review r10-1):
                # not sent, and nothing held (the CH took nothing)
                if r[4] is not None and not await r[4](r[1]):
                    self.counters[_C_RESEND_DROPPED] += 1
                    continue
                deadline = ticks_add(ticks_ms(), int(self.send_timeout_s * 1000))
                _sends += 1
                await self._send_message(r[1], deadline)
                self.counters[_C_RESENT] += 1
                self._remember(r[1], r[4])
            except Exception as exc:  # (a MemoryError for its frame too: review r6-5) the
                # relay's budget covers a resend lost; the task, and the next resend, go on
                self.counters[_C_RESEND_FAILED] += 1
                self._remember(None, None)
                self._logf(_S_RESEND_FAILED, exc)

    # ---- sending ---------------------------------------------------------------------
    async def _reply_loop(self):
        while True:
            while not self._replies:
                self._queued.clear()
                await self._queued.wait()
            dest, zcl = self._replies.pop(0)
            try:
                await self._send_zcl(dest, zcl)
            except Exception as exc:  # a reply lost is one the CH asks for again: logged,
                # never a stop (review r6-5: a MemoryError ended this task, and every later
                # RequestTunnel opened a tunnel on our side the CH never heard of)
                self._logf(_S_REPLY_LOST, exc)

    async def _send_message(self, data, deadline):
        """Send one GBCS message, as GBT blocks when it exceeds the CH's transfer size.
        A piece (TransferData) that cannot be complete at the CH is sent again, here,
        until the deadline; once one may be complete there and is not confirmed, every
        failure is E_DELIVERY_UNKNOWN: nothing is ever sent to the HAN twice."""
        limit = self.tunnel.client_max or self.transfer_size
        self._sent_pieces = 0   # TransferData frames that may be at the CH, so far
        # the message, or each of its GBT blocks in turn, is in this one buffer behind room
        # for the TransferData header, so the send allocates neither blocks nor frames (a
        # piece is only ever sent again alone, below, before the next one is built)
        if len(data) <= limit:
            frame = bytearray(T.TRANSFER_DATA_AT + len(data))
            frame[T.TRANSFER_DATA_AT:] = data
            count, pieces = 1, iter((data,))
        else:
            from ppmid.gbcs import gbt
            frame = bytearray(T.TRANSFER_DATA_AT + limit)
            try:
                count, pieces = gbt.blocks_for_transfer(data, limit, frame, T.TRANSFER_DATA_AT)
            except PpmidError as exc:
                raise HanError(E_HAN_TOO_BIG, _text(_S_NO_SPLIT, (exc,)))
            self.counters[_C_GBT_BLOCKS_TX] += count
        i = 0
        piece = next(pieces)
        while i < count:
            try:
                await self._wait_ready(deadline)
                try:
                    zcl = self.tunnel.outgoing_into(frame, len(piece))
                except T.ZclError:
                    raise _NotTaken(_text(_S_TUNNEL_CLOSED))  # between checks: wait again
                if i == 0:
                    self._sent_tid = self.tunnel.tunnel_id
                await self._send_zcl(self.tunnel.client, zcl)
                zcl = None
                i += 1
                self._sent_pieces = i
                if i < count:
                    piece = next(pieces)
            except _NotTaken as exc:
                if i == 0 and exc.for_good:
                    # nothing of the message is on the HAN, and the module says it will
                    # not take it (too long, invalid call...): trying again will not help
                    raise HanError(E_DELIVERY, str(exc))
                # a refusal "for now" (the network went down under the send, no buffers)
                # is sent again like any piece the CH cannot have: nothing went on air
                # blocks before this one are complete at the CH (each confirmed); this one
                # cannot be: sending it again, alone, neither loses nor doubles anything
                self.counters[_C_SEND_RETRIES] += 1
                if ticks_diff(deadline, ticks_ms()) <= 0:
                    if i == 0:
                        # nothing of it is complete at the CH: the relay may send it later
                        raise HanError(E_HAN_DOWN, _text(_S_NOT_SENT, (self.send_timeout_s, exc)))
                    raise self._uncertain(_text(_S_BLOCK_LATE, (i, count, i + 1, self.send_timeout_s, exc)))
                await sleep_ms(50)
            except HanError as exc:
                if exc.code in (E_DELIVERY, E_DELIVERY_UNKNOWN):
                    self._sent_pieces = i + 1  # this piece's last fragment went on air
                if i > 0 and exc.code != E_DELIVERY_UNKNOWN:
                    raise self._uncertain(_text(_S_BLOCKS_THEN, (i, count, exc.message)))
                raise

    def _uncertain(self, what):
        self.counters[_C_DELIVERY_UNKNOWN] += 1
        return HanError(E_DELIVERY_UNKNOWN, what)

    async def _send_zcl(self, dest, zcl, cluster=T.CLUSTER_TUNNELING, endpoint=T.ENDPOINT, encrypt=True):
        """One ZCL frame, in APS fragments when it exceeds the module's payload limit.
        Returns when the module confirmed every fragment. Raises _NotTaken while the CH
        cannot have the whole frame (a fragment before the last failed, or the last one
        was never taken by the module), E_DELIVERY_UNKNOWN when the last fragment may
        have been taken but was not confirmed, E_DELIVERY when the CH did not
        acknowledge it (see docs/zigbee.md), E_HAN_TOO_BIG."""
        size = self._max_payload
        n = 1
        if len(zcl) > size:
            size -= _FRAGMENT_OVERHEAD
            n = (len(zcl) + size - 1) // size
            if n > _MAX_FRAGMENTS:
                raise HanError(E_HAN_TOO_BIG, _text(_S_FRAGMENTS, (len(zcl), _MAX_FRAGMENTS)))
            zcl = memoryview(zcl)  # each fragment a view, not a copy of the frame in pieces
        aps_seq = 0   # the APS counter the module gave fragment 0: every later one carries it
        for i in range(n):
            last = i == n - 1
            options = _APS_RETRY | _APS_ROUTE_DISCOVERY
            if encrypt:   # Key Establishment frames go with network security only
                options |= _APS_ENCRYPTED
            group = 0
            if n > 1:
                options |= _APS_FRAGMENT
                group = (n << 8) | i
            aps = E.aps_frame(T.PROFILE_SE, cluster, T.ENDPOINT, endpoint, options, group, aps_seq)
            self._tag = (self._tag % 255) + 1
            tag = self._tag
            # the fragment until its messageSentHandler: an Event (set when it came, or when
            # the link failed: _link_lost) that carries the handler's status (0 = the CH
            # acknowledged; None when the wait ended without one: a timeout, or the link
            # failed). No class of its own: a type object and its dict less (docs/memory.md)
            w = asyncio.Event()
            w.status = None
            self._sent[tag] = w
            try:
                try:
                    status, seq = await self._ezsp.send_unicast(dest, aps, tag,
                                                                zcl[i * size:(i + 1) * size] if n > 1 else zcl)
                except (AshError, E.EzspError) as exc:
                    self._logf(_S_UNICAST, exc)
                    if exc.code == E.E_EZSP_TIMEOUT:
                        # ASH took the frame but no answer came: the two ends are out of
                        # step (e.g. the module reset and its RSTACK was lost); only a
                        # reset brings them back together
                        self._link.fail(_text(_S_NO_RESPONSE))
                    if last and exc.on_wire:
                        # the module may have run it and the CH may have the whole frame
                        raise self._uncertain(_text(_S_MAY_HAVE, (exc.code,)))
                    raise _NotTaken(_text(_S_LINK_FAILED, (exc.code,)))
                if status != 0:
                    exc = _NotTaken(_text(_S_REFUSED, (status,)))
                    exc.for_good = not E.refused_for_now(self._ezsp.version, status)
                    raise exc
                if n > 1:
                    self.counters[_C_FRAGMENTS_TX] += 1
                    if i == 0:
                        # all blocks of one APS message share its counter; the receiver keys
                        # its reassembly by sender and counter (docs/zigbee.md)
                        aps_seq = seq
                await wait_event_ms(w, int(self.sent_timeout_s * 1000))
                if w.status is None:  # no messageSentHandler: timeout or link failure
                    if last:
                        raise self._uncertain(_text(_S_TOOK_UNCONFIRMED))
                    raise _NotTaken(_text(_S_UNCONFIRMED, (i,)))
                if w.status != 0:
                    if last:
                        raise HanError(E_DELIVERY, _text(_S_NOT_ACKED, (w.status,)))
                    raise _NotTaken(_text(_S_FRAGMENT_NOT_ACKED, (i, w.status)))
            finally:
                self._sent.pop(tag, None)
