"""Application update benchmarks (docs/update.md):
- P-256 signature verification of a manifest under the MicroPython unix port (the emulated
  board's interpreter), and an ESP32 estimate (an estimate: nothing here ran on hardware);
- a whole-application update over MQTT on the emulated board (real mosquitto, TLS): time to
  download and check it, time until the new version is confirmed, and the bytes written to
  the flash's files;
- an image update over MQTT on the emulated board (docs/update.md "Image updates"): the
  same road into the stand-in OTA app partition, time and bytes written to it;
- the app's offer in both manifest formats (docs/update.md "Manifest formats"): its MQTT
  packet against the 16,384 bytes a gateway receives, and the heap its parsed manifest
  holds under the MicroPython unix port."""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "firmware"))
sys.path.insert(0, HERE)

import p256_timing as P  # noqa: E402

VERIFY_RUNS = 30

VERIFY_SCRIPT = """
import sys, time, json
sys.path.insert(0, %r)
sys.path.insert(0, %r)
from binascii import unhexlify
from update_vectors import PUBLIC, SIGNED
from ppmid.update import p256
text, sig = SIGNED["good"]
key = p256.public_key(unhexlify(PUBLIC))
sig = unhexlify(sig)
text = text.encode()
out = []
for i in range(%d):
    t = time.ticks_us()
    ok = p256.verify(key, text, sig)
    out.append(time.ticks_diff(time.ticks_us(), t))
    assert ok
print(json.dumps(out))
"""


def verify_rows():
    script = VERIFY_SCRIPT % (os.path.join(ROOT, "firmware"), os.path.join(ROOT, "tests", "firmware"), VERIFY_RUNS)
    med = P.median_ms(script, "verify")
    return P.rows("update verify P-256 signature", med,
                  "median of %d verifications of a manifest's ECDSA P-256/SHA-256 signature, pure Python "
                  "(ppmid.update.p256) under the MicroPython unix port, 256K heap" % VERIFY_RUNS)


def _offer(make_release, timeout_s, what):
    """Make a release in a scratch folder (make_release(key_path, out_dir, scratch)), offer
    it to an emulated board over MQTT and wait until it is applied: (release, chunk size
    the board asked for, status name -> time first seen, start, end)."""
    from host_tools import emulate as E
    from host_tools import update as U
    import update_vectors as V
    with tempfile.TemporaryDirectory(prefix="bench-update-") as d:
        key = os.path.join(d, "operator.pem")
        with open(key, "w") as f:
            f.write(V.PRIVATE_PEM)
        out = os.path.join(d, "release")
        make_release(key, out, d)
        rel = U.Release(out)
        settings = {"update": {"public_key": V.PUBLIC, "probation_boots": 2, "probation_s": 60}}
        with E.Emulation(os.path.join(d, "emu"), overrides=settings, log=None) as emu:
            marks = {}
            t0 = time.monotonic()

            def progress(st):
                marks.setdefault(st.get("state"), time.monotonic())
            s = U.UpdateSender(emu.broker_dir, emu.gateway, rel, progress=progress)
            try:
                st = s.run(timeout_s)
            finally:
                s.close()
            t_end = time.monotonic()
        if st.get("state") != "applied":
            raise RuntimeError("the %s was not applied: %s" % (what, st))
    chunk = s.statuses[0].get("chunk") if s.statuses else None
    return rel, chunk, marks, t0, t_end


def update_rows():
    from host_tools import update as U
    rel, chunk, marks, t0, t_end = _offer(lambda key, out, d: U.release("emulated", key, out, "9.0.0"), 600,
                                          "update")
    n = len(rel.data)
    return [
        {"name": "update whole app over MQTT: download + checks (emulated)", "value": round(marks["switching"] - t0, 2),
         "unit": "s", "note": "%d files, %d bytes, %s-byte chunks, one chunk per status round trip, broker on "
                              "loopback with TLS, emulated board (unix port)" % (n, rel.total, chunk)},
        {"name": "update whole app over MQTT: offer to confirmed (emulated)", "value": round(t_end - t0, 2), "unit": "s",
         "note": "download, switch, reset, boot on probation, MQTT online, confirmed and reported"},
        {"name": "update whole app: file bytes written to flash", "value": rel.total, "unit": "bytes",
         "note": "the new set's files, written once each (a resumed download writes only what is missing); plus "
                 "the stage and pointer JSON files (a few hundred bytes each, renamed into place); "
                 "LittleFS metadata and block rewrites not counted"},
    ]


IMAGE_BYTES = 512 * 1024  # a stand-in image (an ESP32 MicroPython image is ~1.5-2 MB)


def image_rows():
    from host_tools import update as U

    def make(key, out, d):
        img = os.path.join(d, "firmware.bin")
        with open(img, "wb") as f:
            f.write(os.urandom(IMAGE_BYTES))
        U.release_image("emulated", key, out, "9.0.0", img)
    rel, chunk, marks, t0, t_end = _offer(make, 900, "image update")
    blocks = -(-IMAGE_BYTES // 4096)
    return [
        {"name": "update image over MQTT: download + read-back check (emulated)",
         "value": round(marks["switching"] - t0, 2), "unit": "s",
         "note": "%d bytes into the stand-in OTA partition, %s-byte chunks, one chunk per status round trip, "
                 "4 KB blocks, SHA-256 over a read-back; emulated board (unix port), broker on loopback with TLS; "
                 "an ESP32's flash erase/write time is not modelled" % (IMAGE_BYTES, chunk)},
        {"name": "update image over MQTT: offer to confirmed (emulated)", "value": round(t_end - t0, 2), "unit": "s",
         "note": "download, set_boot, reset, first boot on probation, MQTT online, marked valid and reported"},
        {"name": "update image: bytes written to the partition", "value": blocks * 4096, "unit": "bytes",
         "note": "%d blocks of 4 KB, each written once (the last padded with 0xff); plus the otadata record (256 "
                 "bytes, written at set_boot, at the first boot and at mark_valid) and the pointer JSON; a "
                 "download cut by a power cut starts again from byte 0" % blocks},
    ]


PARSE_SCRIPT = """
import gc, sys, json
sys.path.insert(0, %r)
from ppmid.update import manifest as M
from ppmid.mqtt.intake import writable
buf = bytearray(open(%r, "rb").read())
oid, text, sig = M.parse_offer(memoryview(buf))  # the text where it lies, as the updater reads it
gc.collect()
base = gc.mem_alloc()
tree = json.loads(text)
gc.collect()
loaded = gc.mem_alloc() - base
tree = None
gc.collect()
base = gc.mem_alloc()
m = M.parse_manifest(text)
gc.collect()
print(json.dumps([loaded, gc.mem_alloc() - base, len(m["files"]), 64 if sys.maxsize > 2 ** 32 else 32]))
"""


def offer_rows():
    """The emulated board's app offer in manifest formats 1 and 2: the MQTT packet that
    carries it, and under the MicroPython unix port the live heap of json.loads' tree of the
    signed text and of the manifest parse_manifest keeps for the whole download."""
    import json
    import subprocess
    import update_vectors as V
    from host_tools import update as U
    from tests.conftest import micropython_binary
    rows = []
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "op.pem")
        with open(key, "w") as f:
            f.write(V.PRIVATE_PEM)
        for fmt in (2, 1):
            out = os.path.join(d, "rel%d" % fmt)
            m = U.release("emulated", key, out, "9.0.0", manifest_format=fmt)
            rel = U.Release(out)
            offer = U.offer_json(rel.text, rel.signature, "0" * U.OFFER_ID_CHARS)
            size = U.offer_packet_size(offer)
            path = os.path.join(d, "offer%d.json" % fmt)
            with open(path, "wb") as f:
                f.write(offer)
            p = subprocess.run([micropython_binary(), "-X", "heapsize=512K", "-c",
                                PARSE_SCRIPT % (os.path.join(ROOT, "firmware"), path)],
                               capture_output=True, text=True, timeout=120)
            if p.returncode:
                raise RuntimeError("micropython: %s" % p.stderr.strip()[-300:])
            loaded, kept, n, bits = json.loads(p.stdout.strip().splitlines()[-1])
            rows += [
                {"name": "update offer, app (emulated), manifest format %d" % fmt, "value": size, "unit": "bytes",
                 "goal": "<= %d" % (U.OFFER_PACKET_MAX * 3 // 4 if fmt == 2 else U.OFFER_PACKET_MAX),
                 "ok": size <= (U.OFFER_PACKET_MAX * 3 // 4 if fmt == 2 else U.OFFER_PACKET_MAX),
                 "note": "the MQTT packet (topic, packet id, offer_json) for %d files; a gateway receives %d; "
                         "format 2 keeps a quarter free for the modules to come" % (len(m["files"]), U.OFFER_PACKET_MAX)},
                {"name": "update offer parse heap, manifest format %d" % fmt, "value": kept, "unit": "bytes",
                 "note": "live heap of the parsed manifest (%d files) the updater keeps for the download; json.loads' "
                         "tree of the signed text before it: %d; MicroPython unix port (%s-bit), gc.mem_alloc() "
                         "after gc.collect()" % (n, loaded, bits)},
            ]
    return rows


def run():
    return offer_rows() + verify_rows() + update_rows() + image_rows()
