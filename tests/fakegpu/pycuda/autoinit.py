"""pycuda.autoinit as pycuda documents it: init, a new context on device 0, popped at exit."""

import atexit

import pycuda.driver as cuda

cuda.init()
device = cuda.Device(0)
context = device.make_context()


def _finish_up() -> None:
    global context
    context.pop()
    context = None


atexit.register(_finish_up)
