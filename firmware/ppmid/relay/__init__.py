# The relay core: intake -> checks -> journal -> HAN tunnel -> correlated response -> MQTT.
# Import the pieces directly (ppmid.relay.core, .outbox, .health, .journal, .ratelimit,
# .counters) so a board loads only what it uses.
