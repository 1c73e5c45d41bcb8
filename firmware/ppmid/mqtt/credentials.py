# The boot-only part of the MQTT link: the gateway's credentials, read from flash at boot
# (docs/config.md: the DER files of the TLS client context and the envelope key), the TLS
# context, and the link's set-up (its client and intake). The app drops this module once
# everything runs (ppmid.boot.BOOT_ONLY); the link keeps the TLS context it made.
from micropython import const

from ppmid.errors import ConfigError

CA = "/certs/ca.der"
CERT = "/certs/gateway.der"
KEY = "/certs/gateway.key.der"
ENVELOPE_KEY = "/secrets/envelope.key"


def _read(root, path, what):
    try:
        with open(root + path, "rb") as f:
            data = f.read()
    except OSError:
        raise ConfigError("%s missing at %s: provision the gateway (ppmid provision)" % (what, path))
    if not data:
        raise ConfigError("%s at %s is empty" % (what, path))
    return data


def load_credentials(root=""):
    """(ca_der, cert_der, key_der, envelope_key) from flash, or ConfigError."""
    ekey = _read(root, ENVELOPE_KEY, "envelope key")
    if len(ekey) != 32:
        raise ConfigError("envelope key at %s must be 32 bytes, not %d" % (ENVELOPE_KEY, len(ekey)))
    return (_read(root, CA, "CA certificate"), _read(root, CERT, "gateway certificate"),
            _read(root, KEY, "gateway private key"), ekey)


def ssl_context(ca_der, cert_der, key_der):
    """MicroPython ssl.SSLContext for mutual TLS: verify the broker against the CA, present
    the gateway certificate (all DER, as provisioned on flash)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_der)
    ctx.load_cert_chain(cert_der, key_der)
    return ctx


# JSON wrapping around the base64 GBCS: id, mac, expires, keys, quotes (generous).
_JSON_OVERHEAD = const(256)
# An update offer carries the signed manifest, which lists every file of the app (11.6 KB
# for 85 files in session 6): larger than the command cap of the default max_gbcs, and an
# offer the client throws away as too large is never answered on the update topic, so the
# cap is never below this. The receive buffer grows only when such a packet comes.
_UPDATE_OFFER_MAX = const(16384)


def max_packet_for(max_gbcs):
    """The MQTT client's receive limit for a gateway whose commands carry up to max_gbcs
    bytes of GBCS."""
    return max(4 * ((max_gbcs + 2) // 3) + _JSON_OVERHEAD + 64, _UPDATE_OFFER_MAX)


def set_up(link, cfg, accept, root, track, wlan, log, connect, credentials):
    """Link.__init__'s work (see ppmid.mqtt.link.Link): topics, the client with its will
    and receive limit, the intake, the update subscription. credentials: (ca, cert, key,
    envelope key) or None to read them from flash; connect: the client's connector or None
    for TLS to the configured broker."""
    from ppmid.mqtt.client import MQTTClient, tls_connector
    from ppmid.mqtt.contract import ROOT, UPDATE_IN, Topics, state_json
    from ppmid.mqtt.intake import Intake
    eui = cfg["gateway"]
    b = cfg["broker"]
    link.topics = Topics(eui)
    ca, cert, key, _ = credentials or load_credentials(root)
    if connect is None:
        try:
            ctx = ssl_context(ca, cert, key)
        except (ValueError, OSError) as exc:
            raise ConfigError("certificates on flash are not usable: %s" % (exc,))
        connect = tls_connector(b["host"], b["port"], ctx, b.get("server_hostname"), track, cfg.get("dns"), wlan)
    max_gbcs = cfg["limits"]["max_gbcs"]
    link.client = MQTTClient(eui, connect, keepalive=b.get("keepalive_s", 30),
                             will=(link.topics.state, state_json("offline"), 1, True),
                             on_up=link._on_up, max_packet=max_packet_for(max_gbcs), wlan=wlan, log=log)
    link.intake = Intake(link.client, eui, accept, max_gbcs, link.topics)
    link.client.subscribe(ROOT + eui + "/" + UPDATE_IN, 1)  # update offers and data (docs/update.md)
