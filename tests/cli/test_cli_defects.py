"""Defects a new user met on the command line (issue 22): each is one clear line, or the parser's usage error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (["bundle"], "(repeat; default PA and AP; add LL/RL for laterals)."),
        (["predict"], "Images per inference call (default: the bundle's)."),
        (["serve", "dicom"], "(repeat; default: any, on loopback only)."),
        (["serve", "dicom"], "Append the JSON-line event log here (default: stderr)."),
        (["serve", "triton"], "Largest dynamic batch (default: the bundle's)."),
        (["serve", "triton"], "(statistics ...; default: a random one)."),
    ],
)
def test_help_shows_every_default(command: list[str], text: str) -> None:
    """Rich read ``[default: ...]`` as markup and dropped it ("Model name ."): the defaults are in the help."""
    res = runner.invoke(app, [*command, "--help"], terminal_width=400)
    assert res.exit_code == 0
    assert text in " ".join(res.output.replace("│", " ").split())


def test_bench_with_an_empty_backend_list_is_an_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", str(tmp_path), "--backends", ""])
    assert res.exit_code == 1 and "--backends is empty; name one or more of" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["bench", ".", "--iters", "0"],
        ["export", "x.pt", "--out", "o", "--opset", "30"],
        ["kernels", "check", "--iters", "0"],
    ],
)
def test_values_outside_a_declared_range_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    """Exit 2 with the usage box, as the README's exit-code rule says (and nothing printed before it)."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "exporting" not in res.output and ">" not in res.output.splitlines()[0]
