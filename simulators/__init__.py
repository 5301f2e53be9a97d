"""Simulators that stand in for field hardware, for people as well as tests.

- ``python -m simulators.modbus_counter``: Modbus pulse-counter modules with fault injection
  (simulators/modbus_counter.py, simulators/fault_proxy.py);
- ``simulators.gpio_pulses``: a fake libgpiod chip and pulse trains for the GPIO source.
"""
