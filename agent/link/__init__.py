"""The MQTT link: topic tree, sealed envelopes, durable outbox, backoff.

Everything here is sans-I/O and portable (CPython and MicroPython): the
transports (``hw/mqtt_paho.py`` on CPython, ``agent/link/umqtt.py`` on
MicroPython) only move bytes and report connects, messages and PUBACKs.
See docs/mqtt.md for the protocol.
"""
