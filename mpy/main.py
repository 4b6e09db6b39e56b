# The board's entry point: run the agent (hw.mpy.main).  A configuration
# error stops here, before the watchdog starts, with the message on the
# serial console and the coils held off by boot.py.  Any other crash waits
# a minute, then resets: the meter comes back on its own, without a reset
# loop that would pulse the relay coil every few seconds.
import sys
import time

import machine

from agent.config import ConfigError

try:
    import hw.mpy

    hw.mpy.main()
except ConfigError as exc:
    print("config.json:", exc)
except KeyboardInterrupt:
    print("stopped")
except Exception as exc:
    sys.print_exception(exc)
    time.sleep(60)
    machine.reset()
