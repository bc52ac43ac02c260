"""Build the optional C extensions; without a compiler vudo installs anyway and runs its
pure-Python paths. Everything else about the package lives in pyproject.toml.

- ``vudo._cnative``: the native call path, host trampoline, epoch ticker, lock, built-ins.
- ``vudo._nbus``: the in-process message bus and the free-list host heap.
"""

from setuptools import Extension, setup

NATIVE = ["module.c", "caller.c", "host.c", "lock.c", "builtins.c", "bushost.c"]
NBUS = [
    "bus.c", "bus_hooks.c", "bus_py.c", "bus_type.c",  # the message bus
    "heap.c", "heap_py.c",  # the host heap
    "host.c", "host_test.c", "module.c",  # host function bodies, test entry points, capsule
]

setup(
    ext_modules=[
        Extension(
            "vudo._cnative",
            sources=[f"src/vudo/_native/{name}" for name in NATIVE],
            depends=[f"src/vudo/_native/{h}" for h in (
                "native.h", "host.h", "wasmtime_api.h")]
            + ["src/vudo/_nbus/vudo_nbus.h"],  # the capsule's C API, header only: no linking
            extra_compile_args=["-O2", "-std=gnu11"],
            libraries=["dl", "pthread"],
            optional=True,
        ),
        Extension(
            "vudo._nbus",
            sources=[f"src/vudo/_nbus/{name}" for name in NBUS],
            depends=[f"src/vudo/_nbus/{h}" for h in ("nbus.h", "heap.h", "vudo_nbus.h")],
            extra_compile_args=["-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra",
                                "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
            optional=True,
        ),
    ]
)
