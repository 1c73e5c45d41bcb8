# The update's last word at boot (docs/update.md "Probation"): imported by ppmid.boot only
# when the pointer says a set is on probation or a result is not reported yet, and
# forgotten again once done.
#   - on probation: once the HAN link runs and MQTT is online, confirm the set (the
#     probation clock in main.py then stops) -> "applied";
#   (the info is published again afterwards: its "update" part changed)
#   - a result not reported yet ("applied", or "rolled-back" written by main.py or the
#     probation clock): publish it, retained, on ppmid/v1/EUI/update, then mark it.
import json

from ppmid.update import slots
from ppmid.clock import sleep_ms

POLL_MS = 500


def _forget():
    # nothing of ppmid.update that this loaded stays once the result is out (the app's
    # heap); the package alone, not all under it: an offer that came meanwhile keeps the
    # updater (ppmid.update.service) and the download it holds in memory
    from ppmid.modules import unload
    unload("ppmid.update.report", "ppmid.update.slots", "ppmid.modules")
    unload("ppmid.update", under=False)


async def settle(root, version, han, link, summary, log=print, images=None):
    """summary: the info's "update" dict, brought up to date in place; images: the
    board's image_slots (a callable), for an image update on probation."""
    try:
        await _settle(root, version, han, link, summary, log, images)
    finally:
        _forget()


async def _settle(root, version, han, link, summary, log, images):
    client = link.client
    st = slots.state(root)
    label = st["probation"].get("image") if "probation" in st else None
    img = images() if label and images is not None else None
    if label and (img is None or img.running() != label):
        # the pointer was written, but the bootloader did not boot the new partition (a
        # power cut before set_boot(), or no partitions at all): the old image runs
        slots.rollback(root, slots.E_UPDATE_BOOT, "the bootloader did not boot partition %s" % label)
        st = slots.state(root)
    while "probation" in st:
        if han.status == "running" and client.state == "online":
            if img is not None:
                img.mark_valid()  # before the pointer: the bootloader keeps this image now
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
    from ppmid.mqtt.contract import ROOT, UPDATE
    await client.publish(ROOT + client.client_id + "/" + UPDATE, json.dumps(obj).encode(), 1, True)
    slots.mark_reported(root)
    summary.update(slots.summary(slots.state(root)))
    if "image" in summary and images is not None:  # the partition that booted, as at boot
        i = images()
        summary["image"] = dict(summary["image"], running=i.running() if i is not None else None)
    await link.republish_info()  # its "update" changed since the connect published it
