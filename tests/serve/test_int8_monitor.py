"""The node's live INT8 monitor (issue 26, item 3): drift after a scanner change and not before.

The bundle's INT8 files are calibrated and gated (``--min-agreement 0.95``, which they pass) on the
"old scanner": phantoms whose DICOM window shows them at 30 % of full scale. The "new scanner" is
the same kind of image under a narrower window (a 4x gain, clipped), as a protocol change would
write it: activations leave the ranges calibration saw, and INT8 parts from FP32. The model is an
untrained ``omsf2_tiny``; what is tested is the monitor, and the test first checks, with the two
Predictors directly, that the stream is what it says (INT8 agrees on the old scanner, not on the new).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.serve.int8_monitor import GateBound, Int8Monitor, MonitorSpec, gate_bound, groups_of, is_sampled

OLD = {"Manufacturer": "OldVendor", "StationName": "XR1", "WindowCenter": 6825, "WindowWidth": 13650}  # 0.3x
NEW = {"Manufacturer": "NewVendor", "StationName": "XR2", "WindowCenter": 512, "WindowWidth": 1024}  # 4x, clipped


def _phantoms(split: str, n: int) -> list[tuple[int, np.ndarray]]:
    from omsf2.data.synthetic import generate_phantom

    return [(p.stage, p.image) for p in (generate_phantom(21, i, split, 96) for i in range(n))]


def _write_folder(root: Path, split: str, n: int) -> Path:
    """``root/<stage>/*.png``: ``n`` phantoms as the old scanner shows them (30 % of full scale)."""
    from omsf2.data.synthetic import STAGES

    for i, (stage, img) in enumerate(_phantoms(split, n)):
        (root / STAGES[stage]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 0.3 * 255).astype(np.uint8)).save(root / STAGES[stage] / f"{split}-{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def int8_bundle(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of ``tiny_ckpt`` with both INT8 files, calibrated and gated on old-scanner images."""
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    root = tmp_path_factory.mktemp("monitor-model")
    calib, gate = _write_folder(root / "calib", "train", 32), _write_folder(root / "gate", "val", 32)
    run_export(
        ExportSpec(str(tiny_ckpt), str(root / "export"), int8=True, calib_data=str(calib), calib_count=32,
                   min_calib=16, eval_data=str(gate), max_drop=100.0, min_agreement=0.95)
    )  # fmt: skip
    make_bundle(BundleSpec(str(root / "export"), str(root / "bundle"), name="tiny", version="1.0.0"))
    return root / "bundle"


def _stream(kit: Any, scanner: dict[str, Any], n: int, offset: int) -> list[Any]:
    return [
        kit.make_dx(np.round(img * 4095).astype(np.uint16), BitsStored=12, **scanner)
        for _, img in _phantoms("test", offset + n)[offset:]
    ]


def test_drift_fires_after_the_scanner_changes_and_not_before(int8_bundle, node_factory, sink, kit, tmp_path) -> None:
    from omsf2.runtime.predictor import Predictor

    old, new = _stream(kit, OLD, 40, 0), _stream(kit, NEW, 40, 40)
    files = []
    for name, ds in [*(("old", d) for d in old), *(("new", d) for d in new)]:
        files.append((name, tmp_path / "stream" / f"{name}-{len(files):03d}.dcm"))
        files[-1][1].parent.mkdir(exist_ok=True)
        ds.save_as(files[-1][1], enforce_file_format=True)
    int8 = Predictor.from_bundle(int8_bundle, "ort-int8", 1)
    fp32 = Predictor.from_bundle(int8_bundle, "ort", 1)

    def agreement(which: str) -> float:
        paths = [p for name, p in files if name == which]
        pairs = zip(int8.predict(paths), fp32.predict(paths), strict=True)
        return float(np.mean([a.label == b.label for a, b in pairs]))

    assert agreement("old") >= 0.95 and agreement("new") <= 0.8, (agreement("old"), agreement("new"))

    sink.start()
    spool, audit = tmp_path / "spool", tmp_path / "audit.jsonl"
    node = node_factory(sink.forward, kit.free_port(), "--backend", "ort-int8", "--monitor", "1.0",
                        "--audit", str(audit), bundle=int8_bundle).start()  # fmt: skip
    monitor = node.wait_events("monitor", 1)[0]
    assert monitor["deployed"] == "model.int8-cpu.onnx" and monitor["bound"]["overall"] == 0.95

    def checked() -> int:
        return int(json.loads((spool / "monitor.json").read_text())["checked"])

    assert kit.send(node.port, old) == [0] * 40
    kit.wait_for(lambda: checked() == 40, 120, "the monitor to check the old scanner's 40 images")
    assert node.events("int8_drift") == []  # 40 old-scanner images: no drift (and no single image fires it)

    assert kit.send(node.port, new) == [0] * 40
    want = {("all", "all"), ("modality", "DX"), ("manufacturer", "NewVendor"), ("station", "XR2")}
    kit.wait_for(lambda: {(e["attribute"], e["group"]) for e in node.events("int8_drift")} >= want, 120, "drift")
    kit.wait_for(lambda: checked() == 80, 120, "the monitor to check all 80 images")
    drift = node.events("int8_drift")
    assert {(e["attribute"], e["group"]) for e in drift} == want  # never the old scanner's groups
    for e in drift:
        assert e["ci"][1] < e["bound"] and e["n"] >= 30  # judged on an interval, not one image
    assert node.terminate() == 0

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {(r["attribute"], r["group"]) for r in records if r["event"] == "int8_drift"} == {
        (e["attribute"], e["group"]) for e in node.events("int8_drift")
    }
    out = CliRunner().invoke(app, ["serve", "dicom", "--status", str(spool)], terminal_width=300)
    assert out.exit_code == 0, out.output
    assert "INT8 monitor (model.int8-cpu.onnx vs FP32" in out.output
    assert "DRIFT" in out.output and "(manifest export.int8_cpu)" in out.output and "checked 80" in out.output
    groups = {(g["attribute"], g["group"]): g for g in json.loads((spool / "monitor.json").read_text())["groups"]}
    assert {k for k, g in groups.items() if g["drift"]} == want
    assert groups[("manufacturer", "OldVendor")]["agreement"] >= 0.95 > groups[("manufacturer", "NewVendor")]["ci"][1]


def test_the_monitor_refuses_what_it_cannot_watch(int8_bundle, dicom_bundle, tmp_path) -> None:
    runner = CliRunner()
    base = ["serve", "dicom", "--forward", "PACS@127.0.0.1:4242", "--port", "0", "--spool", str(tmp_path / "s")]
    fp32 = runner.invoke(app, [*base, "--model", str(dicom_bundle), "--backend", "ort", "--monitor", "0.1"])
    assert fp32.exit_code == 1 and "--monitor compares the deployed INT8 model with FP32" in fp32.output
    no_gate = runner.invoke(app, [*base, "--model", str(dicom_bundle), "--backend", "ort", "--monitor", "2"])
    assert no_gate.exit_code == 1 and "--monitor must be a fraction in (0, 1]" in no_gate.output
    alone = runner.invoke(app, [*base, "--model", str(int8_bundle), "--monitor-bound", "0.9"])
    assert alone.exit_code == 1 and "go with --monitor FRACTION" in alone.output
    assert not (tmp_path / "s").exists()  # refused before a spool was made


def test_gate_bound_comes_from_the_deployed_files_gate_record() -> None:
    manifest = {"export": {"int8": {"file": "model.int8.onnx", "passed": True, "min_agreement": 0.98,
                                    "min_group_agreement": 0.9},
                           "int8_cpu": {"file": "model.int8-cpu.onnx", "passed": True, "min_agreement": 0.97,
                                        "min_group_agreement": None}}}  # fmt: skip
    assert gate_bound(manifest, "model.int8.onnx") == GateBound(0.98, 0.9, "manifest export.int8")
    assert gate_bound(manifest, "model.int8-cpu.onnx") == GateBound(0.97, 0.97, "manifest export.int8_cpu")
    assert gate_bound(manifest, "other.onnx", 0.9).source == "--monitor-bound"
    with pytest.raises(ValueError, match=r"records no INT8 gate for other\.onnx"):
        gate_bound(manifest, "other.onnx")
    manifest["export"]["int8"]["min_agreement"] = 0.0
    with pytest.raises(ValueError, match="set no agreement bound"):
        gate_bound(manifest, "model.int8.onnx")


def test_sampling_is_by_uid_and_near_the_fraction() -> None:
    uids = [f"1.2.3.{i}" for i in range(4000)]
    picked = [u for u in uids if is_sampled(u, 0.1)]
    assert 300 < len(picked) < 500 and picked == [u for u in uids if is_sampled(u, 0.1)]
    assert all(is_sampled(u, 1.0) for u in uids)


def test_one_disagreement_does_not_fire_and_drift_clears_when_agreement_returns(tmp_path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    spec = MonitorSpec(1.0, window=40, min_samples=20)
    mon = Int8Monitor(spec, None, GateBound(0.95, 0.9, "test"), tmp_path / "monitor.json",
                      lambda e, f: events.append((e, f)), {})  # fmt: skip
    a, b = np.array([0.9, 0.1]), np.array([0.1, 0.9])
    header = {"Manufacturer": "V", "Modality": "DX"}
    for i in range(30):
        mon.record(header, a, b if i == 5 else a)  # one disagreement in 30
    assert events == []
    for _ in range(8):
        mon.record(header, a, b)
    fired = [f for e, f in events if e == "int8_drift"]
    assert {(f["attribute"], f["group"]) for f in fired} == {("all", "all"), ("manufacturer", "V"), ("modality", "DX"),
                                                            ("station", "(not recorded)")}  # fmt: skip
    for _ in range(60):
        mon.record(header, a, a)
    assert {f["group"] for e, f in events if e == "int8_drift_cleared"} == {"all", "V", "DX", "(not recorded)"}
    status = json.loads((tmp_path / "monitor.json").read_text())
    assert status["checked"] == 98 and all(not g["drift"] for g in status["groups"])
    mon.close()


def test_groups_of_a_header_without_the_attributes() -> None:
    assert groups_of({}) == [("all", "all"), ("manufacturer", "(not recorded)"), ("station", "(not recorded)"),
                             ("modality", "(not recorded)")]  # fmt: skip


def test_a_failing_reference_is_counted_and_a_full_queue_drops_without_waiting(tmp_path) -> None:
    import time

    class Slow:
        def run_batch(self, x):
            time.sleep(0.05)
            raise RuntimeError("the FP32 session broke")

    mon = Int8Monitor(MonitorSpec(1.0), Slow(), GateBound(0.9, 0.9, "test"), tmp_path / "monitor.json",
                      lambda e, f: None, {})  # fmt: skip
    t0 = time.perf_counter()
    queued = [mon.offer(f"1.2.3.{i}", {}, np.zeros((1, 8, 8), np.float32), np.array([0.6, 0.4])) for i in range(100)]
    assert time.perf_counter() - t0 < 1.0  # the result path never waits for the monitor
    mon.close(timeout=10)
    status = json.loads((tmp_path / "monitor.json").read_text())
    assert status["offered"] == 100 and status["dropped"] == queued.count(False) >= 30
    assert status["failed"] == queued.count(True) and status["checked"] == 0
