# Runs first at every reset, before main.py: drive both relay coil pins to
# "off" at once, so nothing between reset and the agent's start can pulse a
# coil (the hardware's pull-downs hold them off until here).
def _coils_off():
    try:
        import json
        from machine import Pin

        with open("config.json") as f:
            hw = json.load(f).get("hw", {})
        off = 1 if hw.get("coil_active_low") else 0
        for key in ("relay_set_pin", "relay_reset_pin"):
            pin = hw.get(key)
            if isinstance(pin, int) and not isinstance(pin, bool):
                Pin(pin, Pin.OUT, value=off)
    except Exception as exc:  # no config yet: the pull-downs keep the coils off
        print("boot: coils not driven off:", exc)


_coils_off()
del _coils_off
