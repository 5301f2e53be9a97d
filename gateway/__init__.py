"""pulse-gateway: pulse-output utility meters as BACnet/IP points (the B6070's job, in software)."""

__version__ = "0.1.0"
