# The safe mode (docs/update.md "Safe mode"): what main.py starts instead of the app after
# slots.SAFE_AFTER boots in a row that did not start it (a crash or hang at boot, whatever
# the cause). It keeps only what lets the gateway be mended remotely: the MQTT link (state
# and info, which says "safe-mode"), the update topics (an update switches and resets into
# the new set), and the REPL (`ppmid provision`, `ppmid deploy`). Commands are refused with
# E_SAFE_MODE: nothing is journaled or relayed. It runs once: the next reset tries the app
# again.
import asyncio

from ppmid import VERSION
from ppmid.errors import PpmidError

E_SAFE_MODE = "E_SAFE_MODE"


async def _refuse(env, via="mqtt"):
    raise PpmidError(E_SAFE_MODE, "the gateway is in safe mode (its app failed to start): commands are refused "
                     "until it is updated or reset")


async def run(board, failed):
    root = board.fs_root.rstrip("/")
    print("PPMID status: safe-mode: %d boots in a row did not start the app; MQTT, updates and the REPL only" % failed)
    print("PPMID ready: version=%s board=%s free_heap=%d" % (VERSION, board.name, board.mem_free()))
    try:
        from ppmid import config
        cfg = config.load(root + "/config.json")
        from ppmid.mqtt.credentials import load_credentials
        from ppmid.mqtt.link import Link
        creds = load_credentials(root)
        info = {"fw": VERSION, "board": board.name, "state": "safe-mode", "boot_failures": failed}
        link = Link(cfg, _refuse, root=root, track=board.wlan.track, wlan=board.wlan, log=print,
                    info=lambda: info, credentials=creds)
    except PpmidError as exc:  # no usable config or certificates: the REPL is what is left
        print("PPMID status: safe-mode: no MQTT (%s)" % (exc,))
        while True:
            await asyncio.sleep(3600)
    link.intake.update = (board, None, link, VERSION)  # the updater, as in the app
    wifi = cfg.get("wifi") or {}
    try:
        board.wlan.active(True)
        board.wlan.connect(wifi.get("ssid") or "", wifi.get("password") or "")
    except OSError as exc:
        print("PPMID wifi: connect failed: %r" % (exc,))
    await link.run()
