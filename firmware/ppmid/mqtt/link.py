# Builds the gateway's MQTT link from the provisioned config and files (docs/config.md):
# TLS context from the DER certificates on flash, the client with its last will, the
# intake on the cmd topic, and retained state/info published on every connect.
import asyncio
from micropython import const

from ppmid.errors import ConfigError
from ppmid.mqtt.client import MQTTClient, tls_connector
from ppmid.mqtt.contract import ROOT, UPDATE_IN, Topics, state_json, info_json
from ppmid.mqtt.intake import Intake
from ppmid.clock import wait_for_ms

# JSON wrapping around the base64 GBCS: id, mac, expires, keys, quotes (generous).
_JSON_OVERHEAD = 256


# An update offer carries the signed manifest, which lists every file of the app (11.6 KB
# for 85 files in session 6): larger than the command cap of the default max_gbcs, and an
# offer the client throws away as too large is never answered on the update topic, so the
# cap is never below this. The receive buffer grows only when such a packet comes.
_UPDATE_OFFER_MAX = const(16384)


def max_packet_for(max_gbcs):
    return max(4 * ((max_gbcs + 2) // 3) + _JSON_OVERHEAD + 64, _UPDATE_OFFER_MAX)


class Link:
    """The MQTT side of a gateway: `client`, `intake`, `topics`; run() forever.

    info: a callable returning the dict published (retained) on ppmid/v1/EUI/info at every
    connect; call republish_info() when it changes. The link itself is ZigbeeHan's on_status
    hook: link(status, detail) has the info published, paced (ppmid.mqtt.info_follow)."""

    def __init__(self, cfg, accept, root="", track=None, wlan=None, log=None, info=None,
                 connect=None, credentials=None):
        eui = cfg["gateway"]
        b = cfg["broker"]
        self.topics = Topics(eui)
        self.info = info
        if credentials is None or connect is None:
            # boot-only code (ppmid.boot.BOOT_ONLY drops it once the app runs)
            from ppmid.mqtt.credentials import load_credentials, ssl_context
        ca, cert, key, _ = credentials or load_credentials(root)
        if connect is None:
            try:
                ctx = ssl_context(ca, cert, key)
            except (ValueError, OSError) as exc:
                raise ConfigError("certificates on flash are not usable: %s" % (exc,))
            connect = tls_connector(b["host"], b["port"], ctx, b.get("server_hostname"), track)
        self.client = MQTTClient(eui, connect, keepalive=b.get("keepalive_s", 30),
                                 will=(self.topics.state, state_json("offline"), 1, True),
                                 on_up=self._on_up, max_packet=max_packet_for(cfg["limits"]["max_gbcs"]),
                                 wlan=wlan, log=log)
        self.intake = Intake(self.client, eui, accept, cfg["limits"]["max_gbcs"], self.topics)
        self.client.subscribe(ROOT + eui + "/" + UPDATE_IN, 1)  # update offers and data (docs/update.md)

    async def _on_up(self, session_present):
        await self.client.publish(self.topics.state, state_json("online"), 1, True)
        await self.republish_info()

    def __call__(self, *_):
        # ZigbeeHan's on_status hook (status, detail): the info follows the HAN's status and
        # commissioning, paced (ppmid.mqtt.info_follow, loaded at the first change while
        # online). The link itself, not a named method, is the hook: a bound method and its
        # name cost the app ~100 bytes of heap for good (bench heap32).
        if self.client.state == "online":
            from ppmid.mqtt.info_follow import changed
            changed(self)

    async def republish_info(self):
        if self.info is not None:
            await self.client.publish(self.topics.info, info_json(self.info()), 1, True)

    async def run(self):
        await self.client.run()

    async def stop(self, timeout=2):
        # Say offline ourselves: a graceful DISCONNECT suppresses the will.
        if self.client.state == "online":
            try:
                await wait_for_ms(self.client.publish(self.topics.state, state_json("offline"), 1, True), int(timeout * 1000))
            except Exception:  # noqa: BLE001 - best effort; the will covers a dead link
                pass
        await self.client.stop()
