"""OpenVINO's one ``Core`` per process, and the alternate signal stack its CPU plugin swaps under the caller.

OpenVINO's CPU plugin (``SigAltStackSetup`` in ``src/plugins/intel_cpu``, added for AMX in
openvinotoolkit/openvino#11894, unchanged through 2026.4) mmaps an alternate signal stack and installs it
with ``sigaltstack`` on the thread that creates the plugin: the first ``compile_model`` or device query
of every ``ov.Core``. When the plugin is destroyed it unmaps that memory, but puts the previous stack back
only if the destroying thread's current stack is its own. Plugins released in any other order than last
in, first out (Cores A then B, freed A then B, as a dict of compiled models is freed), or on another
thread, leave the creating thread's alternate stack in unmapped memory. CPython installs every
Python-level signal handler with ``SA_ONSTACK`` (3.10+, bpo-43390), so the next handled signal on that
thread (Ctrl-C or SIGTERM during training, the SIGCHLD handler that torch's DataLoader leaves installed)
finds no stack for its frame, and the kernel kills the process with SIGSEGV (``si_code`` SI_KERNEL)
before faulthandler, whose handler runs on the same stack, can print anything.

Here the process has one Core, created once and never released, and its CPU plugin is created inside
:func:`kept_signal_stack`, which puts the caller's alternate stack back at once: the plugin's stack is
then installed on no thread, and releasing it can leave none behind. The trade-off: every session shares
one Core's plugin and caches, so options go to each ``compile_model`` call, never to the Core.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_SS_DISABLE = 2  # Linux <bits/ss_flags.h>
_SS_AUTODISARM = 1 << 31
_lock = threading.Lock()
_core: Any = None


class _StackT(ctypes.Structure):
    _fields_ = (("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t))


@dataclasses.dataclass(frozen=True)
class SignalStack:
    """The calling thread's alternate signal stack, as ``sigaltstack(2)`` reports it.

    Attributes:
        sp: its lowest address (0 when none is set).
        size: its size in bytes.
        flags: ``SS_DISABLE`` (2) when there is none; ``SS_ONSTACK`` (1) while a handler runs on it.
    """

    sp: int
    size: int
    flags: int


@functools.cache
def _sigaltstack() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.sigaltstack
    fn.argtypes = (ctypes.POINTER(_StackT), ctypes.POINTER(_StackT))
    fn.restype = ctypes.c_int
    return fn


def signal_stack() -> SignalStack | None:
    """The calling thread's alternate signal stack; None off Linux (OpenVINO swaps it only there)."""
    if not sys.platform.startswith("linux"):
        return None
    st = _StackT()
    if _sigaltstack()(None, ctypes.byref(st)) != 0:
        return None
    return SignalStack(st.ss_sp or 0, st.ss_size, st.ss_flags)


def _set_signal_stack(stack: SignalStack) -> int:
    """Install ``stack`` on the calling thread; 0, or the errno."""
    flags = stack.flags & (_SS_DISABLE | _SS_AUTODISARM)  # SS_ONSTACK is a state, not a request
    st = _StackT(stack.sp or None, flags, stack.size)
    return 0 if _sigaltstack()(ctypes.byref(st), None) == 0 else ctypes.get_errno()


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Put the calling thread's alternate signal stack back on exit, whatever was installed inside.

    Where the old stack cannot go back (the kernel refuses one smaller than what AMX state now needs),
    the thread is left with none, so handlers run on its own stack, and a warning says so.
    """
    before = signal_stack()
    try:
        yield
    finally:
        if before is not None and signal_stack() != before:
            err = _set_signal_stack(before)
            if err:
                _set_signal_stack(SignalStack(0, 0, _SS_DISABLE))
                log.warning(
                    "could not restore this thread's signal stack (errno %d); running handlers without one", err
                )


def openvino_core() -> Any:
    """The process's one ``openvino.Core``, its CPU plugin created; read and compile every model with it.

    Raises:
        ImportError: OpenVINO is not installed.
    """
    global _core
    if _core is not None:
        return _core
    import openvino as ov  # before taking the lock: never hold it across an import

    with _lock:
        if _core is None:
            with kept_signal_stack():
                core = ov.Core()
                # Create the CPU plugin here, inside the guard; later compile_model calls reuse it.
                with contextlib.suppress(RuntimeError):  # no CPU plugin: compile_model says why
                    core.get_property("CPU", "FULL_DEVICE_NAME")
            _core = core
        return _core
