# The command intake: ppmid/v1/EUI/cmd -> Envelope -> the relay's accept hook. Topic names
# and payloads come from the contract (ppmid.mqtt.contract, docs/mqtt.md).
#
# Contract with the relay: `async accept(envelope, via)` returns once the command is
# durably journaled, or raises a PpmidError (the command is refused: we publish a
# `rejected` status with its code, then PUBACK). Any other exception propagates to the
# client, which withholds the PUBACK and drops the link, so the broker redelivers the
# command after reconnect: an accepted command is never lost, a refused one is answered.
import json
import sys
from micropython import const

from ppmid import envelope
from ppmid.errors import PpmidError
from ppmid.clock import ticks_ms
from ppmid.mqtt.contract import Topics

VIA = "mqtt"
_MP = sys.implementation.name == "micropython"
# "command is not valid JSON": its sentence in ppmid.envelope_errors (envelope.py's _S_... names
# the others; ppmid.envelope_host refuses with it too)
_S_NOT_JSON = const(17)


def writable(mv):
    # True for a buffer that can be written in place (the client's receive buffer), False
    # for bytes (host tools, tests); the updater reads offers in place by it too
    try:
        mv[0:0] = b""
        return True
    except TypeError:
        return False


class Intake:
    """Glue between the MQTT client and the relay. Registers the cmd subscription and
    becomes the client's message handler. topics: the link's Topics, shared (else made)."""

    def __init__(self, client, eui, accept, max_gbcs, topics=None):
        self.client = client
        self.topics = topics or Topics(eui)
        self.accept = accept
        self.max_gbcs = max_gbcs
        self.stats = {"accepted": 0, "rejected": 0, "reject_drops": 0}
        self.update = None  # (board, relay, link, version): the updater's, set by ppmid.boot
        client.subscribe(self.topics.cmd, 1)
        client.handler = self.handle
        client.oversize = self.too_large

    async def too_large(self, topic, size, qos, dup):
        """The client read past a PUBLISH larger than its max_packet, or one its receive
        buffer could not grow to hold (no block that large free), or one it could not parse
        with a usable packet id (topic None, size the PacketError: ppmid.mqtt.oversize.answer),
        or a retained one (size the E_RETAINED error: ppmid.mqtt.oversize.retained):
        refuse it (rare: the code is ppmid.mqtt.refusal's, loaded for it)."""
        from ppmid.mqtt import refusal
        await refusal.too_large(self, topic, size)

    async def handle(self, topic, payload, qos, dup):
        t0 = ticks_ms()
        obj = None
        id = None
        unparsed = None
        if topic != self.topics.cmd:
            if self.update is None:
                # no updater wired: refused with E_TOPIC (ppmid.mqtt.refusal, loaded for it)
                from ppmid.mqtt import refusal
                await refusal.wrong_topic(self, topic, t0)
                return
            # the only other topics are the update family's (docs/update.md): the updater is
            # imported on the first such message, and answers on its own topic; a signed
            # users update (update/config) goes to its own module instead (docs/security.md),
            # and so does a commission order (update/commission, docs/zigbee.md)
            if topic.endswith("/config"):
                from ppmid.relay.users_update import handle
            elif topic.endswith("/commission"):
                from ppmid.relay.commission_order import handle
            else:
                from ppmid.update.service import handle
            await handle(self.update, topic, payload)
            return
        try:
            gbcs = None
            try:
                # The command's GBCS bytes are decoded in place, over their base64 in the
                # client's receive buffer (valid until the handler returns, as the command
                # is journaled by then): no second buffer, no allocation as large as the
                # command. A read-only payload (host tools, tests) is copied first.
                if not writable(payload):
                    payload = memoryview(bytearray(payload))
                lifted = envelope.lift_gbcs_in_place(payload, self.max_gbcs)
                if lifted is not None:
                    gbcs = lifted[0]
                    obj = json.loads(lifted[1])
                else:
                    obj = json.loads(payload if _MP else bytes(payload))
                if isinstance(obj, dict) and "utrn" in obj:
                    # a top-up (docs/envelope.md): its code is loaded with the first one (and it
                    # refuses a message that also carries gbcs)
                    from ppmid import topup
                    env = topup.from_json_obj(obj)
                else:
                    env = envelope.from_json_obj(obj, self.max_gbcs, gbcs)
            except (ValueError, UnicodeError):
                raise envelope._refuse(envelope.E_ENVELOPE, _S_NOT_JSON)
            except envelope.EnvelopeError as exc:
                if obj is None:
                    unparsed = payload  # refused before json.loads: the rejection names its id if it is plain
                raise exc
            except (MemoryError, RuntimeError):
                # json.loads on nesting after "gbcs" (the depth check stops at that key; on
                # CPython a RecursionError), a fragmented heap, or the top-up code's import:
                # refused and PUBACKed, never left for the broker to redeliver for ever (what
                # the failed parse built is garbage now: the next allocation collects it)
                obj = None
                unparsed = payload
                from ppmid.mqtt.refusal import short_of_memory
                raise short_of_memory(len(payload))
            id = env.id
            obj = None  # the decoded envelope holds what we need; free the JSON
            await self.accept(env, VIA)
            self.stats["accepted"] += 1
        except PpmidError as exc:
            # a refused command: answered by ppmid.mqtt.refusal, loaded for it (rare)
            from ppmid.mqtt import refusal
            await refusal.command(self, exc, id, obj, unparsed, t0)
