"""Builds the C reader extension; everything else is in pyproject.toml."""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exporter._reader",
            sources=sorted(glob("exporter/native/*.c")),
            depends=sorted(glob("exporter/native/*.h")),
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"],
        )
    ]
)
