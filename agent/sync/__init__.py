"""MQTT: the client wrapper, the event publisher and remote enrollment intake."""
