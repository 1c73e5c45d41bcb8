"""Application updates from the host (docs/update.md): the operator's key, a release (the
compiled application set, its manifest and the signature), and the sender that offers a
release to a gateway over MQTT and serves the chunks it asks for.

- `make_key(path)`: a new ECDSA P-256 private key (PEM, mode 600); its public key in hex
  (the uncompressed point) goes into each gateway's config as update.public_key.
- `release(board, key_path, out_dir, version=None)`: compile firmware/ for the board as
  `ppmid deploy` does (with ppmid.VERSION set to `version` when given), write the files,
  manifest.json and offer.json (the manifest text, its signature) into out_dir; refused
  (OfferTooLarge) when the offer would not fit a gateway's MQTT receive cap.
- `UpdateSender`: publishes the offer on ppmid/v1/EUI/update/offer, answers each
  "downloading" status with the chunk it asks for on .../update/data, re-offers when the
  gateway goes quiet (a drop or a power cut: it resumes), and ends on "applied",
  "refused" or "rolled-back" for this offer.
"""
import base64
import hashlib
import json
import os
import queue
import secrets
import shutil
import struct
import tempfile
import threading
import time

from host_tools.errors import ToolError

# the manifest format ppmid release writes (docs/update.md "Manifest formats"): 2, files as
# [path, size, sha256 in base64] triples; 1 for gateways whose firmware knows only format 1
MANIFEST_FORMAT = 2
MANIFEST_FORMATS = (1, 2)
# The largest MQTT packet every gateway receives (ppmid.mqtt.credentials._UPDATE_OFFER_MAX,
# the floor of max_packet_for): its client refuses a PUBLISH whose remaining length (topic,
# packet id, payload) is larger, and an offer thrown away is never answered
OFFER_PACKET_MAX = 16384
OFFER_ID_CHARS = 12                       # the sender's offer ids: secrets.token_hex(6)
FINAL = ("applied", "refused", "rolled-back")


class UpdateError(ToolError):
    code = "E_UPDATE"


class OfferTooLarge(UpdateError):
    """A release whose offer no gateway could receive (larger than OFFER_PACKET_MAX)."""
    code = "E_UPDATE_OFFER_SIZE"


# ---- keys and signatures --------------------------------------------------------------
def make_key(path):
    """Write a new P-256 private key (PEM) to path; return its public key in hex."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    if os.path.exists(path):
        raise UpdateError("%s exists: not overwriting a signing key" % path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:  # its folder missing or not writable
        raise UpdateError("cannot write the signing key %s: %s" % (path, exc.strerror or exc))
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_hex(key)


def load_key(path):
    """The operator's P-256 private key in PEM file `path`; host_tools.keys.KeyFileError
    saying what is wrong."""
    from host_tools.keys import load_p256
    return load_p256(path, private=True)


def public_hex(key):
    """The uncompressed point (04 || X || Y) in hex, as update.public_key wants it."""
    from cryptography.hazmat.primitives import serialization
    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()


def sign(key, data):
    """ECDSA P-256 / SHA-256 signature of data as r || s (64 bytes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def canonical(obj):
    """The manifest's signed text: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def offer_json(manifest_text, signature, offer_id=None):
    return json.dumps({"id": offer_id or secrets.token_hex(6), "manifest": manifest_text,
                       "signature": signature.hex()}).encode()


def offer_packet_size(offer, eui="0" * 16):
    """The MQTT remaining length of the PUBLISH that carries offer (bytes, offer_json's) to
    a gateway: the topic with its 2-byte length, the QoS 1 packet id, the payload; what the
    gateway's client compares with its cap. eui: the gateway's (every EUI-64 is 16 digits)."""
    from ppmid.mqtt.contract import ROOT, UPDATE
    return 2 + len(ROOT + eui + "/" + UPDATE + "/offer") + 2 + len(offer)


def check_offer_size(offer, what="the offer", eui="0" * 16):
    """The offer's packet size (offer_packet_size); OfferTooLarge, with the figures, when
    it is over what every gateway's MQTT client receives. what: the offer, said for the
    message."""
    size = offer_packet_size(offer, eui)
    if size > OFFER_PACKET_MAX:
        raise OfferTooLarge("%s would be a %d-byte MQTT packet (topic and payload), %d bytes over the %d a "
                            "gateway's MQTT client receives: no gateway could take it, so it is not written"
                            % (what, size, size - OFFER_PACKET_MAX, OFFER_PACKET_MAX))
    return size


def file_entry(path, data, manifest_format):
    """One file of a manifest's "files" in manifest_format (docs/update.md "Manifest formats")."""
    digest = hashlib.sha256(data).digest()
    if manifest_format == 1:
        return {"path": path, "sha256": digest.hex(), "size": len(data)}
    return [path, len(data), base64.b64encode(digest).decode()]


def file_paths(manifest):
    """The paths of a set manifest's files, in order, whatever its format."""
    return [e["path"] if isinstance(e, dict) else e[0] for e in manifest["files"]]


# ---- releases ---------------------------------------------------------------------------
def _set_version(firmware_dir, version):
    path = os.path.join(firmware_dir, "ppmid", "__init__.py")
    with open(path) as f:
        lines = f.read().splitlines(True)
    n = 0
    for i, line in enumerate(lines):
        if line.startswith("VERSION = "):
            lines[i] = "VERSION = %r\n" % version
            n += 1
    if n != 1:
        raise UpdateError("%s has no single VERSION line to set" % path)
    with open(path, "w") as f:
        f.writelines(lines)


def firmware_version(firmware_dir):
    with open(os.path.join(firmware_dir, "ppmid", "__init__.py")) as f:
        for line in f:
            if line.startswith("VERSION = "):
                return line.split("=", 1)[1].strip().strip("\"'")
    raise UpdateError("%s/ppmid/__init__.py has no VERSION" % firmware_dir)


def _check_folder(option, path, must_exist=False):
    """A folder a release is read from or written to: UpdateError before the build when it
    is a file (or, must_exist, not there)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UpdateError("%s %s is a file, not a folder" % (option, path))
    if must_exist and not os.path.exists(path):
        raise UpdateError("%s %s does not exist" % (option, path))


def release(board, key_path, out_dir, version=None, firmware_dir=None, min_config_version=1, downgrade=False,
            log=None, expires=None, gateways=None, seq=None, manifest_format=MANIFEST_FORMAT):
    """Build and sign a release of firmware_dir for board into out_dir; return the manifest.
    expires: unix seconds (default EXPIRES_IN_S from now); gateways: the EUI-64s it is
    for (None: every gateway of the board; a downgrade needs them); seq: the replay
    floor's number (default: now in unix seconds, docs/update.md "Replay");
    manifest_format: 2, or 1 for gateways that know only format 1 (the stepping stone).
    OfferTooLarge, and nothing written, when the offer would not fit a gateway's MQTT cap."""
    from host_tools import deploy
    from host_tools.boards import FIRMWARE_DIR
    log = log or (lambda m: None)
    if manifest_format not in MANIFEST_FORMATS:
        raise UpdateError("--manifest-format must be 1 or 2, not %r" % (manifest_format,))
    _check_release(board, min_config_version)
    limits = _limits(expires, gateways, downgrade, seq)
    key = load_key(key_path)
    firmware_dir = firmware_dir or FIRMWARE_DIR
    _check_folder("--firmware-dir", firmware_dir, must_exist=True)
    _check_folder("--out", out_dir)
    if version is not None:
        _check_version(version)
    work = tempfile.mkdtemp(prefix="ppmid-release-")
    try:
        src = os.path.join(work, "firmware")
        shutil.copytree(firmware_dir, src, ignore=shutil.ignore_patterns("__pycache__"))
        if version is not None:
            _set_version(src, version)
        version = firmware_version(src)
        _check_version(version)
        try:
            build_dir, files, _ = deploy.build(board, src, os.path.join(work, "build"))
        except deploy.DeployError as exc:
            raise UpdateError(str(exc))
        # the set an update replaces: the package and the board definition (boot.py and
        # main.py are the loader: they stay as deployed, docs/update.md)
        files = [f for f in files if f.startswith("ppmid/") or f == "board.json"]
        blobs = []
        for rel in sorted(files):
            with open(os.path.join(build_dir, rel), "rb") as f:
                blobs.append((rel, f.read()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from ppmid.update.manifest import MAX_FILES
    if len(blobs) > MAX_FILES:
        raise UpdateError("the set has %d files, a gateway takes %d at most (ppmid.update.manifest.MAX_FILES): "
                          "not written" % (len(blobs), MAX_FILES))
    manifest = dict(limits, format=manifest_format, version=version, board=board,
                    min_config_version=min_config_version, downgrade=bool(downgrade),
                    files=[file_entry(rel, data, manifest_format) for rel, data in blobs])
    # signed and measured before anything is written: a refused release leaves out_dir as it was
    text, sig = _sign_offer(key, manifest, "the offer of %d files in manifest format %d" % (len(blobs), manifest_format))
    if os.path.isdir(out_dir):
        shutil.rmtree(os.path.join(out_dir, "files"), ignore_errors=True)
    os.makedirs(os.path.join(out_dir, "files"), exist_ok=True)
    for rel, data in blobs:
        dst = os.path.join(out_dir, "files", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(data)
    _write_signed(out_dir, key, text, sig)
    log("release %s for %s: %d files, %d bytes, manifest format %d, offer %d bytes of the %d a gateway receives, "
        "signed by %s..." % (version, board, len(blobs), sum(len(d) for _, d in blobs), manifest_format,
                             offer_packet_size(offer_json(text, sig)), OFFER_PACKET_MAX, public_hex(key)[:18]))
    return manifest


def _sign_offer(key, manifest, what):
    """(signed text, signature) of manifest: OfferTooLarge when the offer the sender makes of
    them (offer_json, an id as long as its own) would not fit a gateway's MQTT cap."""
    text = canonical(manifest)
    sig = sign(key, text.encode())
    check_offer_size(offer_json(text, sig, "0" * OFFER_ID_CHARS), what)
    return text, sig


def _write_signed(out_dir, key, text, sig):
    """manifest.json (the signed text, canonical JSON) and offer.json (what the gateway is
    offered: the text, its signature and the public key) of a release in out_dir."""
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "offer.json"), "w") as f:
        json.dump({"manifest": text, "signature": sig.hex(), "public_key": public_hex(key)}, f, indent=1)


def release_image(board, key_path, out_dir, version, image_path, min_config_version=1, downgrade=False, log=None,
                  expires=None, gateways=None, seq=None):
    """Sign a firmware image (docs/update.md "Image updates") for board into out_dir: the
    manifest names it by SHA-256 and size; files/image.bin is what the gateway downloads
    into its next OTA app partition. Return the manifest. expires, gateways, seq: as release()."""
    log = log or (lambda m: None)
    definition = _check_release(board, min_config_version)
    limits = _limits(expires, gateways, downgrade, seq)
    key = load_key(key_path)
    _check_version(version)
    _check_folder("--out", out_dir)
    try:
        with open(image_path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UpdateError("cannot read the image %s: %s" % (image_path, exc.strerror))
    if not data:
        raise UpdateError("the image %s is empty" % image_path)
    if definition.get("chip") != "unix":
        # what `ppmid flash` checks (magic byte, chip id): on the board, set_boot() would
        # refuse another chip's image only after the whole download
        from host_tools.flash import FlashError, check_image
        try:
            check_image(image_path, definition["chip"])
        except FlashError as exc:
            raise UpdateError("not signed: %s" % exc.message)
    # format 1: an image manifest is the same in both formats (one {sha256, size} entry), and
    # every gateway takes format 1
    manifest = dict(limits, format=1, version=version, board=board,
                    min_config_version=min_config_version, downgrade=bool(downgrade),
                    image={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    text, sig = _sign_offer(key, manifest, "the image's offer")
    os.makedirs(os.path.join(out_dir, "files"), exist_ok=True)
    with open(os.path.join(out_dir, "files", IMAGE_FILE), "wb") as f:
        f.write(data)
    _write_signed(out_dir, key, text, sig)
    log("image release %s for %s: %d bytes, signed by %s..." % (version, board, len(data), public_hex(key)[:18]))
    return manifest


IMAGE_FILE = "image.bin"


EXPIRES_IN_S = 30 * 86400   # a release's manifest is taken for 30 days unless told otherwise
MAX_GATEWAYS = 1000         # ppmid.update.manifest.MAX_GATEWAYS
MAX_SEQ = 0xFFFFFFFF        # ppmid.update.manifest.MAX_SEQ


def _limits(expires, gateways, downgrade, seq=None):
    """The manifest's "expires" (unix seconds), "seq" and, when given, "gateways" (EUI-64s,
    upper case): a gateway refuses a manifest past its expiry, naming other gateways, or
    whose seq is not above the last one it installed; a downgrade must name its gateways
    (docs/update.md "Manifest", "Replay"). seq defaults to now in unix seconds: every
    release signed later is above every one before it without the operator keeping count
    (two signed in the same second share it: --seq then)."""
    now = int(time.time())
    if expires is None:
        expires = now + EXPIRES_IN_S
    if isinstance(expires, bool) or not isinstance(expires, int) or expires <= 0:
        raise UpdateError("expires must be unix seconds, not %r" % (expires,))
    if seq is None:
        seq = now
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq <= MAX_SEQ:
        raise UpdateError("--seq must be a whole number from 1 to %d (it fits 32 bits), not %r" % (MAX_SEQ, seq))
    out = {"expires": expires, "seq": seq}
    if gateways:
        out["gateways"] = sorted({_eui(g) for g in gateways})
        if len(out["gateways"]) > MAX_GATEWAYS:
            raise UpdateError("at most %d gateways in one manifest" % MAX_GATEWAYS)
    elif downgrade:
        raise UpdateError("a downgrade must name the gateways it is for (--gateway EUI, repeated): a signed "
                          "downgrade for every gateway could be replayed by any DCC User until it expires")
    return out


def _eui(text):
    eui = str(text).upper()
    if len(eui) != 16 or any(c not in "0123456789ABCDEF" for c in eui):
        raise UpdateError("gateway %r is not an EUI-64 (16 hex digits)" % (text,))
    return eui


def _check_release(board, min_config_version):
    """The board's definition; UpdateError for an unknown board or a config version below 1
    (the gateway's config versions start at 1)."""
    from host_tools.boards import BoardError, load_board
    try:
        definition = load_board(board)
    except BoardError as exc:
        raise UpdateError(exc.message)
    if isinstance(min_config_version, bool) or not isinstance(min_config_version, int) or min_config_version < 1:
        raise UpdateError("--min-config-version must be a whole number from 1, not %r" % (min_config_version,))
    return definition


def _check_version(v):
    parts = v.split(".") if isinstance(v, str) else []
    if not parts or len(parts) > 4 or any(not p.isdigit() or len(p) > 6 for p in parts):
        raise UpdateError("version %r is not digits and dots (e.g. 0.2.0)" % (v,))


class Release:
    """A release directory as release() wrote it: the signed text, the signature and the files."""

    def __init__(self, out_dir):
        try:
            with open(os.path.join(out_dir, "offer.json")) as f:
                o = json.load(f)
            self.text = o["manifest"]
            self.signature = bytes.fromhex(o["signature"])
            self.manifest = json.loads(self.text)
            # what the sender reads of the manifest, checked here with the rest (review 90
            # H1: a signed text without "files" was E_INTERNAL, a KeyError); the gateway
            # checks every field itself
            if not isinstance(self.manifest, dict):
                raise TypeError("the signed text is not a manifest (a JSON object)")
            if not isinstance(self.manifest["version"], str):
                raise TypeError("its version is not a string")
            if "image" not in self.manifest:
                files = self.manifest["files"]
                if not isinstance(files, list) or not all(
                        isinstance(e, dict) and isinstance(e.get("path"), str)
                        or isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) for e in files):
                    raise TypeError("its files are not a list of {\"path\": ...} or of [path, size, sha256]")
        except KeyError as exc:
            raise UpdateError("%s is not a release (ppmid release writes one): no %s in it" % (out_dir, exc))
        except (OSError, ValueError, TypeError) as exc:
            raise UpdateError("%s is not a release (ppmid release writes one): %s" % (out_dir, exc))
        self.dir = out_dir
        self.data = []
        if "image" in self.manifest:  # one image, served as file 0
            try:
                with open(os.path.join(out_dir, "files", IMAGE_FILE), "rb") as f:
                    self.data.append(f.read())
            except OSError as exc:
                raise UpdateError("release image %s is missing: %s" % (IMAGE_FILE, exc.strerror))
            return
        for path in file_paths(self.manifest):
            try:
                with open(os.path.join(out_dir, "files", path), "rb") as f:
                    self.data.append(f.read())
            except OSError as exc:
                raise UpdateError("release file %s is missing: %s" % (path, exc.strerror))

    @property
    def version(self):
        return self.manifest["version"]

    @property
    def total(self):
        return sum(len(d) for d in self.data)


def chunk_payload(index, offset, data):
    """A data message: file index (2 bytes), offset (4 bytes), big-endian, then the bytes."""
    return struct.pack(">HI", index, offset) + data


# ---- the sender ---------------------------------------------------------------------------
class UpdateSender:
    """Offers one release to one gateway and serves its requests, as a DCC User / operator
    on the broker. result() blocks until a final status for this offer or the timeout.

    tamper: a test hook (the gateway's refusals are the product, not this): a function
    (index, offset, data) -> data applied to each chunk before it is published."""

    # a gateway refusing E_BUSY had no room for the offer now (docs/update.md): offered again
    # after BUSY_WAIT_S, BUSY_TRIES times at the most, before the refusal is the result
    BUSY_WAIT_S = 3.0
    BUSY_TRIES = 4

    def __init__(self, state_dir, eui, rel, user="dcc-user-test", offer_id=None, quiet_s=8.0, progress=None,
                 tamper=None, signature=None):
        from host_tools import mqtt_tools as mt
        from ppmid.mqtt.contract import ROOT, UPDATE
        self.rel = rel
        self.topic = ROOT + eui.upper() + "/" + UPDATE
        self.offer_id = offer_id or secrets.token_hex(6)
        self.offer = offer_json(rel.text, signature if signature is not None else rel.signature, self.offer_id)
        # a release written before the size check, or an offer id longer than release() counted
        check_offer_size(self.offer, "the offer of %s" % rel.dir, eui.upper())
        self.quiet_s = quiet_s
        self.progress = progress
        self.tamper = tamper
        self.statuses = []
        self.chunks_sent = 0
        self.bytes_sent = 0
        self.offers_sent = 0
        self.busy_refusals = 0
        self._q = queue.Queue()
        self._sub = threading.Event()
        self.client = mt.paho_client(state_dir, user)
        self.client.on_message = lambda c, u, msg: self._q.put(msg.payload)
        self.client.on_subscribe = lambda *a, **k: self._sub.set()
        mt.connect(self.client, state_dir)
        self.client.subscribe(self.topic, qos=1)
        if not self._sub.wait(10):
            raise UpdateError("no SUBACK for %s" % self.topic)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def send_offer(self):
        self.offers_sent += 1
        self.client.publish(self.topic + "/offer", self.offer, qos=1)

    def _serve(self, st):
        i, off, size = st.get("file"), st.get("offset"), st.get("chunk") or 1024
        if not isinstance(i, int) or not isinstance(off, int) or not 0 <= i < len(self.rel.data):
            return
        data = self.rel.data[i][off:off + size]
        if self.tamper is not None:
            data = self.tamper(i, off, data)
        self.client.publish(self.topic + "/data", chunk_payload(i, off, data), qos=1)
        self.chunks_sent += 1
        self.bytes_sent += len(data)

    def run(self, timeout=300.0):
        """Offer, serve, follow; return the final status dict (UpdateError on timeout)."""
        end = time.monotonic() + timeout
        self.send_offer()
        quiet_at = time.monotonic() + self.quiet_s
        while time.monotonic() < end:
            try:
                payload = self._q.get(timeout=max(0.05, min(quiet_at, end) - time.monotonic()))
            except queue.Empty:
                if time.monotonic() >= quiet_at:
                    self.send_offer()  # the gateway went quiet (a drop, a reboot): offer again, it resumes
                    quiet_at = time.monotonic() + self.quiet_s
                continue
            try:
                st = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(st, dict) or st.get("id") != self.offer_id:
                continue  # a retained status of another offer
            self.statuses.append(st)
            quiet_at = time.monotonic() + self.quiet_s
            if self.progress is not None:
                self.progress(st)
            state = st.get("state")
            busy = state == "refused" and isinstance(st.get("error"), dict) and st["error"].get("code") == "E_BUSY"
            if busy and self.busy_refusals < self.BUSY_TRIES:
                self.busy_refusals += 1
                quiet_at = time.monotonic() + self.BUSY_WAIT_S  # the quiet timer offers again
                continue
            if state in FINAL:
                return st
            if state == "downloading" and "file" in st:
                self._serve(st)
            elif state in ("switching", "probation"):
                quiet_at = end  # the result comes once probation ends: no more offers
        raise UpdateError("no final status from %s within %ss (last: %s)"
                          % (self.topic, timeout, self.statuses[-1] if self.statuses else "none"))


def progress_bar(st, width=30, out=None):
    """One carriage-returned line per status: a bar while downloading, the state otherwise."""
    import sys
    out = out or sys.stderr
    state = st.get("state")
    if state == "downloading" and st.get("total"):
        done = st.get("received", 0) / st["total"]
        bar = "#" * int(done * width)
        out.write("\r%s [%-*s] %3d%% %d/%d bytes" % (st.get("version"), width, bar, done * 100, st.get("received", 0),
                                                      st["total"]))
    else:
        out.write("\r%s: %s%s\n" % (st.get("version"), state,
                                     " (%s)" % st["error"]["code"] if isinstance(st.get("error"), dict) else ""))
    out.flush()
