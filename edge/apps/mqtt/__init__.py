"""`edge-asr mqtt`: the daemon's socket -> an MQTT broker, with a disk spool so that no final is lost.

One more subscriber of the socket (the daemon never knows it is there). Every final is
written to the spool first and deleted only once the broker has acknowledged it
(QoS 1 PUBACK); `bridge.py` wires the parts, docs/protocol.md ("MQTT") has the topics.
"""
