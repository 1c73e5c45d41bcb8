# MQTT 3.1.1 for the gateway: packets.py (pure codec), client.py (asyncio client with QoS 1,
# keepalive and reconnect), handshake.py (a connection's start, loaded only then),
# intake.py (the cmd topic -> relay glue), link.py (the gateway's link), contract.py
# (topic names and payloads). Contract: docs/mqtt.md.
