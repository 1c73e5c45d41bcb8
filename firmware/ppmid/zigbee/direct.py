# ZCL frames from the PPMID straight to a HAN device, not through the CH's tunnel: today a
# top-up's Consumer Top Up to the ESME (ppmid.relay.topups). It shares the HAN link's send
# path (its lock, APS options and delivery reports: ZigbeeHan._send_zcl) and is loaded with
# the first top-up (ZigbeeHan.send_zcl), so a gateway that never sees one does not hold it.
from ppmid.errors import E_HAN_DOWN, E_HAN_DEST, E_HAN_TOO_BIG, E_DELIVERY
from ppmid.clock import ticks_ms, ticks_diff, ticks_add, sleep_ms
from ppmid.zigbee.han import HanError, _NotTaken


async def send_zcl(han, dest, cluster, endpoint, zcl, judge=None):
    """One ZCL frame (one APS frame, no fragments) on the SE profile to the device at NWK
    address `dest`, `endpoint`. Needs the network, not the tunnel. Raises HanError:
    E_HAN_DOWN when nothing went on air (the caller may try again later), E_DELIVERY /
    E_DELIVERY_UNKNOWN when it may have (never again). judge: the sender's, called once
    the send lock is ours, before anything goes; what it raises, the frame is not sent
    (the relay's: a top-up that expired while it waited for the lock)."""
    if len(zcl) > han._max_payload or not 0 <= dest <= 0xFFF7:
        raise HanError(E_HAN_TOO_BIG if len(zcl) > han._max_payload else E_HAN_DEST,
                       "cannot send %d bytes to 0x%04X in one APS frame" % (len(zcl), dest))
    async with han._send_lock:
        if judge is not None:
            # the lock may have been held long: by a paced round of the CH's refused
            # messages (review r14-2), up to 8 of them at limits.rate_per_s
            judge()
        deadline = ticks_add(ticks_ms(), int(han.send_timeout_s * 1000))
        while not (han._up and han._net_up and han._link.connected):
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                raise HanError(E_HAN_DOWN, "Zigbee HAN network is %s %s" % (han.status, han.status_detail))
            await sleep_ms(min(left, 200))
        try:
            await han._send_zcl(dest, zcl, cluster, endpoint)
        except _NotTaken as exc:
            raise HanError(E_HAN_DOWN, "not sent: %s" % exc)
        except HanError as exc:
            if exc.code == E_DELIVERY:
                # from a device other than the CH: the meter did not acknowledge it
                raise HanError(E_DELIVERY, "the device 0x%04X did not acknowledge the frame" % dest)
            raise
