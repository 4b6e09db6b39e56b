"""DL/T 645-2007 on RS-485: frame codec, the agent as a slave, and a master.

- ``frame``: wire codec and a stream parser (sans-I/O, never raises);
- ``slave``: answers the utility's handheld or concentrator as the prepaid
  meter, turning control frames into core events;
- ``master``: reads the host meter's registers and cross-checks the pulses.

Config sections ``dlt645`` (``SCHEMA``, the slave) and ``dlt645_master``
(``MASTER_SCHEMA``) are declared in ``agent.dlt645.config`` (kept apart so a
board that only parses frames does not load them); CPython transports are
in hw/serial_link.py.
"""
