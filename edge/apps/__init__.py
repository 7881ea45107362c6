"""Local apps of the daemon's socket: the caption page and the MQTT bridge."""
