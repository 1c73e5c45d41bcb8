# The task that keeps the board's wall clock set by SNTP (docs/platform.md "Clock"): it
# waits for Wi-Fi, asks the configured servers in turn (ppmid.sntp), retries with a
# doubling pause while no usable reply comes and re-syncs every resync_s. The app starts
# it only when Wi-Fi and servers are configured.
#
# Memory: the protocol and one sync (ppmid.sntp: the codec, the query, the jump rule) are
# loaded for each sync and dropped after it, so between syncs the running gateway holds
# only this loop and its state (docs/memory.md). The constructor's work is ppmid.sntp's
# too (set_up), loaded for it and dropped again.


class SntpClient:
    """Keeps `clock` set: asks the servers in turn once Wi-Fi is up, retries with a
    doubling pause (retry_s .. retry_max_s) while no usable reply comes, re-syncs every
    resync_s. `set_time(unix_s, ms)` is the board's RTC setter; `on_set` an optional
    coroutine function called after each set (the app republishes its info). `udp(host,
    port) -> (socket, address)`, `urandom` and `sleep` are injected by tests (None: a
    non-blocking UDP socket, its server's address kept while it answers; os.urandom). dns:
    the config's dns settings, for servers given by name (ppmid.dns_lookup)."""

    def __init__(self, settings, clock, set_time, **options):
        # options (wlan, log, on_set, udp, urandom, sleep, dns) and the state: ppmid.sntp's
        # set_up, loaded for it and dropped again, as after each sync
        from ppmid import sntp
        try:
            sntp.set_up(self, settings, clock, set_time, **options)
        finally:
            sntp = None
            from ppmid.modules import unload
            unload("ppmid.sntp", "ppmid.modules")

    async def sync_once(self):
        """One query to the current server (ppmid.sntp.sync_once); the next pause in seconds."""
        from ppmid import sntp
        try:
            return await sntp.sync_once(self)
        finally:
            from ppmid.modules import unload
            unload("ppmid.sntp", "ppmid.modules")

    def _up(self):
        return self.wlan is None or self.wlan.isconnected()

    async def run(self):
        while True:
            if not self._up():
                await self.sleep(1000)
                continue
            try:
                wait = await self.sync_once()
            except Exception as exc:  # noqa: BLE001 - the clock task must outlive a bug
                self.log("PPMID sntp: %r" % (exc,))
                wait = self.retry_max_s
            # the pause: wait seconds, cut short when Wi-Fi comes back after a drop (sync at
            # once then). Here, not in a coroutine of its own: the task spends nearly all its
            # life in it, and a coroutine it awaited would be one more frame held
            was_up = self._up()
            for _ in range(wait):
                await self.sleep(1000)
                up = self._up()
                if up and not was_up:
                    break
                was_up = up


def republisher(link):
    """The app's on_set hook: each sync republishes the MQTT link's info (clock,
    clock_synced_at) while the link is online. Here, not in boot.py (a closure holds its
    module, and boot.py is dropped after boot), nor in app.py (a gateway without SNTP
    does not need it)."""
    async def synced():
        if link is not None and link.client.state == "online":
            await link.republish_info()
    return synced
