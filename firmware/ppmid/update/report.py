# The update's last word at boot (docs/update.md "Probation"): imported by ppmid.boot only
# when the pointer says a set is on probation or a result is not reported yet, and
# forgotten again once done.
#   - on probation: once the HAN link runs and MQTT is online, confirm the set (the
#     probation clock in main.py then stops) -> "applied";
#   - a result not reported yet ("applied", or "rolled-back" written by main.py or the
#     probation clock): publish it, retained, on ppmid/v1/EUI/update, then mark it.
import json

from ppmid.update import slots
from ppmid.clock import sleep_ms

POLL_MS = 500


async def settle(root, version, han, client, topics, log=print):
    st = slots.state(root)
    while "probation" in st:
        if han.status == "running" and client.state == "online":
            slots.confirm(root, version)
            log("PPMID update: version %s confirmed (running and connected)" % version)
        else:
            await sleep_ms(POLL_MS)
        st = slots.state(root)
    last = st.get("last")
    if not last or last.get("reported", True):
        return
    while client.state != "online":
        await sleep_ms(POLL_MS)
    obj = {"state": last.get("result"), "running": version, "version": last.get("version"),
           "previous": last.get("previous")}
    if st.get("offer") is not None:
        obj["id"] = st["offer"]
    if last.get("error"):
        obj["error"] = last["error"]
    await client.publish(topics.update, json.dumps(obj).encode(), 1, True)
    slots.mark_reported(root)
