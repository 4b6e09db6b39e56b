"""Byte encodings shared by the store, the token layer and the MQTT link."""
