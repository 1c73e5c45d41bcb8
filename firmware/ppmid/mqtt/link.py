# The gateway's MQTT link, built from the provisioned config and files (docs/config.md):
# TLS context from the DER certificates on flash, the client with its last will, the
# intake on the cmd topic (all made at boot by ppmid.mqtt.credentials.set_up), and
# retained state/info published on every connect. A graceful stop (offline, then DISCONNECT),
# which a board never does, is ppmid.mqtt.link_host's.
from ppmid.mqtt.contract import state_json, info_json


class Link:
    """The MQTT side of a gateway: `client`, `intake`, `topics`; run() forever.

    info: a callable returning the dict published (retained) on ppmid/v1/EUI/info at every
    connect; call republish_info() when it changes. The link itself is ZigbeeHan's on_status
    hook: link(status, detail) has the info published, paced (ppmid.mqtt.info_follow)."""

    def __init__(self, cfg, accept, root="", track=None, wlan=None, log=None, info=None,
                 connect=None, credentials=None):
        self.info = info
        # boot-only code: ppmid.mqtt.credentials reads the credentials and sets the link up
        # (its client and intake); the app drops that module once it runs (ppmid.boot.BOOT_ONLY)
        from ppmid.mqtt.credentials import set_up
        set_up(self, cfg, accept, root, track, wlan, log, connect, credentials)

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

    def run(self):
        # the client's own run coroutine, not one that awaits it: the task that runs the
        # link for the app's life holds no frame of this method (docs/memory.md, "Session
        # 11, the relay, MQTT and app side"); a failure that ends it sets the client's
        # state to "ended" (MQTTClient.run)
        return self.client.run()

    def running(self):
        # boot.client_check's test: False once the client's run() ended by a failure
        return self.client.state != "ended"
