# MQTT 3.1.1 for the gateway: packets.py (pure codec), client.py (asyncio client with QoS 1,
# keepalive and reconnect), intake.py (the cmd topic -> relay glue). Contract: docs/mqtt.md.
