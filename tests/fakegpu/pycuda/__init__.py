"""Test double of pycuda (tests/fakegpu/README.md): only `pycuda.driver` and `pycuda.autoinit`."""

VERSION = (2024, 1, 2)
VERSION_STATUS = ""
VERSION_TEXT = "2024.1.2 (fakegpu)"
