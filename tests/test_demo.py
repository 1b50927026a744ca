"""The end-to-end demo at toy size: phantoms -> train -> eval, data reused on a second run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.demo import DemoSpec, run_demo


def test_run_demo_and_reuse(tmp_path: Path) -> None:
    spec = DemoSpec(out=str(tmp_path / "d"), n=8, size=64, epochs=1, batch_size=4, img_size=64, workers=0)
    stages: list[str] = []
    res = run_demo(spec, on_stage=stages.append)
    assert res.val["n"] == 4 and res.test["n"] == 4
    assert (res.run_dir / "best.pt").is_file() and (res.run_dir / "eval-test.json").is_file()
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["test"]["accuracy"] == res.test["accuracy"] and summary["timings"]["total_s"] > 0
    assert stages[0].startswith("writing")
    stamp = (res.data_dir / "synth.json").stat().st_mtime_ns
    stages.clear()
    again = run_demo(spec, on_stage=stages.append)
    assert stages[0].startswith("reusing") and (res.data_dir / "synth.json").stat().st_mtime_ns == stamp
    assert again.test == res.test  # same seed, same data: same result


def test_demo_command(tmp_path: Path) -> None:
    args = ["demo", "--out", str(tmp_path / "d"), "--n", "32", "--epochs", "1", "--workers", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "test split (held out)" in res.output and "recall[stage_III]" in res.output


def test_demo_reports_a_failed_int8_gate_and_goes_on(tmp_path: Path, monkeypatch) -> None:
    """A gate no mix can meet is reported by the demo; the FP32 export and predict still work."""
    import omsf2.export.gate as gate

    real = gate.judge

    def never(labels, fp32_logits, logits, spec):  # a real verdict, then failed whatever it was
        return {**real(labels, fp32_logits, logits, spec), "passed": False, "failed_because": ["forced"]}

    monkeypatch.setattr(gate, "judge", never)
    spec = DemoSpec(out=str(tmp_path / "d"), n=64, size=64, epochs=1, batch_size=16, img_size=64, workers=0,
                    calib_count=64, bench=False)  # fmt: skip
    res = run_demo(spec)
    export = tmp_path / "d" / "export"
    assert res.export is not None
    for flavour, name in (("int8", "model.int8.onnx"), ("int8_cpu", "model.int8-cpu.onnx")):
        assert res.export[flavour]["passed"] is False and res.export[flavour]["failed_because"][0] == "forced"
        assert res.export[flavour]["search"]["passed"] is False  # no mix passed the search part either
        assert not (export / name).exists()  # a failed flavour is not written
    assert (export / "model.onnx").is_file() and (export / "report.json").is_file()
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["export"]["int8"]["passed"] is False
    from omsf2.cli.errors import console
    from omsf2.cli.export_report import print_export

    with console.capture() as cap:
        print_export(res.export)  # what `omsf2 demo` prints after its export
    text = " ".join(cap.get().split())
    assert "model.int8-cpu.onnx" in text and "failed" in text and "not written (forced; search part" in text
    image = sorted((res.data_dir / "test").glob("*/*.png"))[0]
    out = CliRunner().invoke(app, ["predict", str(image), "--model", str(export)])
    assert out.exit_code == 0, out.output
