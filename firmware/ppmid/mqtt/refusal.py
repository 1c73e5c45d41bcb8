# The MQTT intake's refusals: a command it refuses (answered on rsp with its code), a
# message on a topic other than cmd with no updater wired (E_TOPIC), and a message too large
# for the client (on rsp, or on the update topic for the update family), with the sentences
# that only they say.
# Rare by design, so the intake imports this for each refusal and it drops itself again
# (ppmid.modules.unload): the running app does not hold this code (docs/memory.md).
import json

from ppmid import envelope
from ppmid.errors import PpmidError, E_TOO_LARGE, E_BUSY
from ppmid.clock import ticks_ms, ticks_diff
from ppmid.mqtt.contract import status_json

E_TOPIC = "E_TOPIC"


class IntakeError(PpmidError):
    pass


def short_of_memory(size):
    # the intake's refusal of a command it ran short of memory reading (or could not read
    # into the client's buffer at all: too_large below)
    return PpmidError(E_BUSY, "the gateway ran short of memory reading this %d-byte command: send it again later"
                      % size)


def _id_in(payload):
    """The "id" of a command JSON not parsed as a whole, when it is written plainly; else None."""
    mv = memoryview(payload)
    n = len(mv)
    for i in range(n - 5):
        if mv[i] == 0x22 and bytes(mv[i:i + 4]) == b'"id"':
            j = i + 4
            while j < n and mv[j] in b" \t\r\n:":
                j += 1
            if j < n and mv[j] == 0x22:
                k = j + 1
                while k < n and k - j <= 33 and mv[k] != 0x22 and mv[k] != 0x5C:
                    k += 1
                if k < n and mv[k] == 0x22:
                    try:
                        return envelope.check_id(str(bytes(mv[j + 1:k]), "ascii"))
                    except Exception:  # noqa: BLE001 - not a usable id: the rejection has none
                        return None
            return None
    return None


def _done():
    from ppmid.modules import unload
    unload("ppmid.mqtt.refusal", "ppmid.modules")


async def command(intake, exc, id, obj, unparsed, t0):
    """Answer a refused command on rsp: `rejected` with exc's code, and its id when it has
    a usable one (id: from the envelope; else read from obj, the parsed JSON, or from
    unparsed, the payload refused before it was parsed)."""
    intake.stats["rejected"] += 1
    if id is None and unparsed is not None:
        id = _id_in(unparsed)
    elif id is None and isinstance(obj, dict):
        try:
            id = envelope.check_id(obj.get("id"))
        except PpmidError:
            pass
    if getattr(exc, "known_id", False):
        # the relay holds a command by this id (a forged or too large copy of it): a
        # "rejected" naming it would contradict that command's statuses (docs/mqtt.md)
        id = None
    msg = status_json(id, "rejected", ticks_diff(ticks_ms(), t0), error=exc)
    # Written before this message's PUBACK (first=True), not awaited (that PUBACK
    # waits on us): a power cut in between loses both, and the broker redelivers
    # the command, which is refused again. (Should the write fail, the rejection
    # stays in flight and goes again after the reconnect. With queue_size messages
    # already waiting it is dropped and counted, and the command stays refused.)
    try:
        if not await intake.client.publish(intake.topics.rsp, msg, 1, False, False, True):
            intake.stats["reject_drops"] += 1
    finally:
        _done()


async def wrong_topic(intake, topic, t0):
    """A message on a topic other than cmd, with no updater wired to take the update
    family's (a running gateway has one): refused on rsp with E_TOPIC."""
    await command(intake, IntakeError(E_TOPIC, "commands are taken only on %s, not %s" % (intake.topics.cmd, topic)),
                  None, None, None, t0)


async def too_large(intake, topic, size):
    """The client read past a PUBLISH larger than its max_packet, or one its receive buffer
    could not grow to hold (size: its length), or it could not parse one (size: the
    PacketError, topic None: ppmid.mqtt.oversize.answer), or a retained one (size: the
    E_RETAINED error: ppmid.mqtt.oversize.retained): refuse it (the id is in
    the discarded part, so the rejection carries "id": null). On an update topic the
    refusal goes where that road answers (ppmid/v1/EUI/update, docs/update.md), shaped as
    its statuses are: a DCC User's update tool does not watch rsp."""
    client = intake.client
    if isinstance(size, PpmidError):
        # refused for another reason than its size (ppmid.mqtt.oversize): a malformed PUBLISH
        # (topic None: it may be what is wrong, so the refusal goes to rsp with the codec's
        # error) or a retained one (E_RETAINED)
        err = size
    elif size > client.max_packet:
        err = envelope.EnvelopeError(E_TOO_LARGE, "message of %d bytes is larger than the %d allowed"
                                     % (size, client.max_packet))
    else:
        err = short_of_memory(size)  # within the cap, but the client's receive buffer could not grow to hold it
    try:
        if topic is not None and topic != intake.topics.cmd and intake.update is not None:
            kind = topic[topic.rfind("/") + 1:]
            st = {"state": "refused", "error": err.as_dict()}
            updater = kind not in ("config", "commission")
            if updater:
                st["running"] = intake.update[3]  # the updater's statuses are retained, with it
            else:
                st["kind"] = kind
            await client.publish(topic[:topic.rfind("/")], json.dumps(st).encode(), 1, updater, False, True)
        else:
            intake.stats["rejected"] += 1
            if not await client.publish(intake.topics.rsp, status_json(None, "rejected", 0, error=err), 1, False,
                                        False, True):
                intake.stats["reject_drops"] += 1
    finally:
        _done()
