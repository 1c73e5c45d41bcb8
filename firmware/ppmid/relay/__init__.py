# The relay core: intake -> checks -> journal -> HAN tunnel -> correlated response -> MQTT.
# Import the pieces directly (ppmid.relay.core, .outbox, .journal, .ratelimit, ...) so a
# board loads only what it uses (docs/relay.md lists them).
