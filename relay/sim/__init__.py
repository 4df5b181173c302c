"""The synthetic market: an exchange-like upstream that misbehaves on request.

``market`` is the sans-IO model (seeded, clock-free, property-testable); ``server`` is the Trio
shell that serves it over WebSocket, REST and a fault-injection control endpoint. The wire format
is in docs/simulator.md.
"""
