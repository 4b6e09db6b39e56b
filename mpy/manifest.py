# MicroPython manifest: the agent frozen into a firmware image, so its bytecode
# runs from flash instead of being loaded onto the heap (docs/hardware.md,
# "Firmware").  Relative paths resolve against this file: the agent package
# is the repository's agent/, and the board shell is the hw/ modules a
# board runs (not the Pi or desktop backends).  asyncio and ssl are what the
# board shell and the MQTT link need; a port whose own manifest already freezes them (esp32,
# rp2) gets each once, as manifests skip a file they have already included.
include("$(MPY_DIR)/extmod/asyncio")
require("ssl")
package("agent", base_path="..")
package("hw", files=["__init__.py", "base.py", "config.py", "keys.py", "mpy.py"], base_path="..")
