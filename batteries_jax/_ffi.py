"""Loads the compiled extension and registers every XLA FFI target once per platform."""
from __future__ import annotations

import functools

import jax

from batteries_jax import _batteries_jax as _ext

#: True when the extension carries the CUDA handlers.
WITH_CUDA: bool = bool(_ext.with_cuda)


def ext():
    """The compiled extension (module.cc): its handlers and the sizes the lowerings ask it for."""
    return _ext


@functools.cache
def register() -> None:
    """Register the handlers with XLA (idempotent). Target names are "bj_<op>"."""
    for platform, targets in _ext.registrations().items():
        for name, capsule in targets.items():
            jax.ffi.register_ffi_target(name, capsule, platform=platform)


register()
