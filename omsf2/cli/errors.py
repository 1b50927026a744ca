"""The command line's edge: its consoles, the one-line error rule and the -v switch.

Every command module wraps its command with :func:`cli_errors`: library errors become one ``error:``
line on stderr and exit 1 (130 on Ctrl-C), a missing optional stack names the extra that installs it,
and ``-v`` adds the traceback. Kept apart from ``app`` so that command modules (bench, predict,
serve) share it without importing the root app.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from omsf2.config import SettingError


class PipeSafeConsole(Console):
    """Rich's console, except that a reader leaving early is a normal end, exit 0 (rich exits 1)."""

    def on_broken_pipe(self) -> None:
        """``omsf2 models | head -1``: what the reader read is complete; stop writing quietly."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0)


console = PipeSafeConsole()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


VERBOSE = {"on": False}  # set by the root callback (-v)


def fail(msg: str, code: int = 1) -> typer.Exit:
    """Print ``error: msg`` on stderr and return the ``typer.Exit`` to raise."""
    err.print(f"[red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# optional module -> the extra that installs it, for "this command needs X" errors
EXTRAS = {
    "pytriton": "triton-serve",
    "torch": "train",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxslim": "onnx",
    "onnxruntime": "runtime",
    "cryptography": "runtime",
    "pynetdicom": "dicom",
    "highdicom": "dicom",
}


def message(e: BaseException) -> str:
    """The one-line text of a library error (out-of-memory errors say so and what to do)."""
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, MemoryError):
        return f"out of memory ({type(e).__name__}: {msg[:200]}); use smaller sizes or batches"
    if "out of memory" in msg.lower() and isinstance(e, RuntimeError):
        return f"out of memory: {msg[:300]}; use smaller sizes or batches"
    return msg


def cli_errors(fn: F) -> F:
    """Turn library errors into one line on stderr and exit code 1 (130 on Ctrl-C); ``-v`` adds the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:
            console.on_broken_pipe()  # a write outside rich found the reader gone
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except ModuleNotFoundError as e:  # an optional stack this command needs (torch without [train] ...)
            root = (e.name or "").split(".")[0]
            extra = EXTRAS.get(root)
            hint = f"pip install 'omsf2[{extra}]'" if extra else f"pip install {root}"
            raise fail(f"this command needs {root or 'a missing module'}, which is not installed ({hint})") from None
        except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError, MemoryError) as e:
            if VERBOSE["on"]:
                err.print(escape("".join(traceback.format_exception(e))), highlight=False, end="")
            msg = message(e)
            if isinstance(e, SettingError) and e.setting in kwargs:
                msg += f" (--{e.setting.replace('_', '-')})"  # the library names its setting; the flag is ours
            raise fail(msg) from None

    return wrapper  # type: ignore[return-value]


class OwnRecordsOnly(logging.Filter):
    """Without -v the terminal shows omsf2's own warnings and errors, not the libraries' log output."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep records of the ``omsf2`` loggers only."""
        return record.name == "omsf2" or record.name.startswith("omsf2.")
