"""Every figure through matplotlib: confusion matrix and bench plots, written atomically as PNG."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from omsf2.plots import batch_scaling_png, confusion_png, latency_png


def test_confusion_png(tmp_path: Path) -> None:
    path = confusion_png(tmp_path / "c.png", [[3, 1], [0, 4]], ["a", "b"], "t")
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] > 150 and img.size[1] > 150
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]


def test_bench_plots(tmp_path: Path) -> None:
    rows = [
        {"backend": b, "batch": n, "img_size": 64, "status": "ok", "p50_ms": t * n, "p90_ms": 1.2 * t * n,
         "p99_ms": 1.5 * t * n, "throughput_ips": 1000 / t}
        for b, t in (("torch", 4.0), ("ort", 2.0)) for n in (1, 8)
    ] + [{"backend": "tensorrt", "batch": 1, "img_size": 64, "status": "skipped", "p50_ms": None}]  # fmt: skip
    for fn, name in ((latency_png, "lat.png"), (batch_scaling_png, "batch.png")):
        assert Image.open(fn(tmp_path / name, rows, "title")).format == "PNG"
