# Application updates in the field (docs/update.md): a manifest signed by the operator
# (ECDSA P-256, SHA-256), files downloaded over MQTT into a slot on flash, an atomic switch
# by a pointer file, and a probation with rollback. Nothing here is imported by a running
# gateway until an update message arrives or a switched set is on probation.
