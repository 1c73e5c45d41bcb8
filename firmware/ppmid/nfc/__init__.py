# NFC intake: a PN532 (HSU or I2C) reads DCC User commands from phones (HCE app, chunked
# APDU protocol) and tags (NDEF), hands them to the relay and returns the responses.
# Layers: frames (pure codec) -> pn532 (driver over an injected transport) -> phone / tag
# sessions -> service (the polling loop). Contract and app protocol: docs/nfc.md.
