"""The bundled configs (demo, Modbus demo, commented example): package gateway.configs when
installed, read with importlib.resources."""
