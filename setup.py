"""Build the optional native core (vudo._cnative); without a compiler vudo installs anyway.

Everything else about the package lives in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vudo._cnative",
            sources=[
                "src/vudo/_native/module.c",
                "src/vudo/_native/caller.c",
                "src/vudo/_native/host.c",
                "src/vudo/_native/lock.c",
                "src/vudo/_native/builtins.c",
            ],
            depends=[
                "src/vudo/_native/native.h",
                "src/vudo/_native/host.h",
                "src/vudo/_native/wasmtime_api.h",
                "src/vudo/_native/vudo_native_host.h",
            ],
            extra_compile_args=["-O2", "-std=gnu11"],
            libraries=["dl", "pthread"],
            optional=True,
        )
    ]
)
