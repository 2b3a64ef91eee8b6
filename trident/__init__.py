"""Trident: a Triton-compatible inference server written in Python.

The code lives in two subpackages, mapped from the repository's top-level folders:
``trident.runtime`` (server, protocol frontends, core) and ``trident.backends``
(framework backends).
"""

__version__ = "0.1.0"
