"""``omsf2 kernels check``: every backend on this machine against the reference, one line on bad input."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from omsf2.cli.app import app

runner = CliRunner()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU report")
def test_kernels_check_on_cpu_runs_triton_in_the_interpreter() -> None:
    res = runner.invoke(app, ["kernels", "check", "--device", "cpu", "--iters", "3"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.output.splitlines() if ln.startswith("│")]
    triton = [ln for ln in rows if "│ triton " in ln]
    cuda = [ln for ln in rows if "│ cuda " in ln]
    assert len(triton) == 3 and all("│ ok " in ln for ln in triton), res.output  # ran, in the interpreter
    assert len(cuda) == 3 and all("unavailable" in ln for ln in cuda), res.output
    assert "MISMATCH" not in res.output and "never timed" in res.output


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--device", "tpu"], {}, "invalid device 'tpu'; choose auto, cpu or cuda[:index]"),
        ([], {"OMSF2_KERNELS": "bogus"}, "invalid OMSF2_KERNELS value 'bogus'; choose one of: triton, cuda, ref"),
    ],
)
def test_kernels_check_bad_input_is_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    res = runner.invoke(app, ["kernels", "check", "--iters", "1", *args], env=env)
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output


@pytest.mark.parametrize(
    ("args", "choices"),
    [(["--dtype", "fp8"], "'fp32', 'fp16', 'bf16'"), (["--backend", "tensorrt"], "'triton', 'cuda', 'ref'")],
)
def test_kernels_check_choices_are_usage_errors(args: list[str], choices: str) -> None:
    # The README's rule: a value outside an option's declared choices is a usage error, exit 2.
    res = runner.invoke(app, ["kernels", "check", *args], env={"COLUMNS": "200"})
    assert res.exit_code == 2, res.output
    assert "Invalid value" in res.output and choices in res.output


def test_kernels_check_help_lists_the_choices() -> None:
    out = runner.invoke(app, ["kernels", "check", "--help"], env={"COLUMNS": "200"}).output
    assert "[triton|cuda|ref]" in out and "[fp32|fp16|bf16]" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_cuda_index_is_reported_as_given() -> None:
    res = runner.invoke(app, ["kernels", "check", "--device", "cuda:1", "--iters", "1"])
    assert res.exit_code == 1 and "device 'cuda:1' requested" in res.output, res.output
