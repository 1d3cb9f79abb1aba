"""Build hook: compiles the C control core (firmware/native) into thermopilot.host._tpcore."""

from setuptools import setup

setup(cffi_modules=["host/native_build.py:ffibuilder"])
