"""The demo reports an INT8 gate it cannot meet and still finishes (README's first command exits 0)."""

from __future__ import annotations

from pathlib import Path

from omsf2.demo import DemoSpec, run_demo


def test_demo_finishes_and_reports_a_failed_int8_gate(tmp_path: Path, monkeypatch) -> None:
    import omsf2.export.gate as gate

    real = gate.judge

    def cpu_flavour_fails(labels, fp32_logits, logits, spec):
        rec = real(labels, fp32_logits, logits, spec)
        stack.append(rec)
        if len(stack) <= 2:  # S8S8 passes its search and its gate; U8S8 and every mixed-precision trial fail
            return {**rec, "passed": True, "failed_because": []}
        return {**rec, "passed": False, "failed_because": ["forced"]}

    stack: list[dict] = []
    monkeypatch.setattr(gate, "judge", cpu_flavour_fails)
    spec = DemoSpec(out=str(tmp_path / "d"), n=64, size=64, epochs=1, batch_size=16, img_size=64, workers=0)
    stages: list[str] = []
    res = run_demo(spec, on_stage=stages.append)
    export = tmp_path / "d" / "export"
    assert res.export is not None and res.export["gate_failed"] == ["int8_cpu"]
    assert res.export["int8"]["passed"] and not res.export["int8_cpu"]["passed"]
    assert (export / "model.onnx").is_file() and (export / "model.int8.onnx").is_file()
    assert not (export / "model.int8-cpu.onnx").exists()  # a flavour that failed is not shipped
    assert any(s.startswith("INT8 gate failed for int8_cpu") for s in stages)
    assert res.export["int8_cpu"]["mixed_precision"]["tried"]  # the fallback was tried before giving up
