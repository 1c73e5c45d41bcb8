# The gateway's MQTT credentials, read from flash at boot (docs/config.md): the DER files
# of the TLS client context and the envelope key. Boot-only: the app drops this module once
# everything runs (ppmid.boot.BOOT_ONLY); the link keeps the TLS context it made.
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
