"""Running the sans-I/O driver cores on real MicroPython (see tests/test_micropython_cores.py)."""
