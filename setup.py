"""Build the optional C extension vudo._nbus (message bus and host heap).

Kept minimal: project metadata lives in pyproject.toml. ``optional=True`` makes a failed build
(no compiler, no Python headers) a warning, and vudo then runs its pure-Python paths.
"""

from setuptools import Extension, setup

NBUS_SOURCES = [
    "bus.c", "bus_hooks.c", "bus_py.c", "bus_type.c",  # the message bus
    "heap.c", "heap_py.c",  # the host heap
    "host.c", "host_test.c", "module.c",  # host function bodies, test entry points, capsule
]

setup(
    ext_modules=[
        Extension(
            "vudo._nbus",
            sources=[f"src/vudo/_nbus/{name}" for name in NBUS_SOURCES],
            depends=[f"src/vudo/_nbus/{h}" for h in ("nbus.h", "heap.h", "vudo_nbus.h")],
            extra_compile_args=["-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra",
                                "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
