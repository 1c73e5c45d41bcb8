# The MQTT contract's pieces only host tools use: what a gateway publishes on and reads,
# from which `ppmid broker` builds the broker's ACL (host_tools/broker.py, mosquitto;
# host_tools/broker_rabbitmq.py). Apart from ppmid.mqtt.contract so that the gateway does not
# hold them (docs/memory.md, session 9); nothing in the firmware imports this module.
from ppmid.mqtt.contract import UPDATE, UPDATE_IN

GATEWAY_WRITES = ("rsp", "alert", "state", "info", "log", UPDATE)
GATEWAY_READS = ("cmd", UPDATE_IN)
