# MQTT 3.1.1 for the gateway: packets.py (pure codec; packets_errors.py: its refusals'
# sentences, packets_host.py: its pieces only host tools and tests use), client.py (asyncio
# client with QoS 1, keepalive and reconnect; client_errors.py: its failures' sentences),
# handshake.py (a connection's start, loaded only then; oversize.py: reading past a message
# too large for the receive buffer, loaded only for one), intake.py (the cmd topic -> relay
# glue; refusal.py: its refusals, loaded for each), link.py (the gateway's link; link_host.py:
# its graceful stop, which only host tools and tests do), contract.py (topic names and
# payloads; contract_host.py: the broker ACL's topic lists). Contract: docs/mqtt.md.
