"""The ``pmeter`` command line: simulator, agent and head-end tools."""
