"""Relay mode: ``ghl-relay`` (``server``, ``store``, ``cli``) and the desktop's ``client`` for it."""
