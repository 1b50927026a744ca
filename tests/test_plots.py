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


def test_latency_plot_keeps_p50_readable_beside_p99_outliers(tmp_path: Path, monkeypatch) -> None:
    import omsf2.plots as plots

    figs = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figs.append(fig), real_save(fig, path))[1])
    rows = [
        {"backend": "torch", "batch": 1, "img_size": 64, "status": "ok", "p50_ms": 2044.3, "p90_ms": 2538.4,
         "p99_ms": 2558.3},
        {"backend": "ort", "batch": 1, "img_size": 64, "status": "ok", "p50_ms": 2.28, "p90_ms": 13.8, "p99_ms": 25.3},
        {"backend": "ort", "batch": 2, "img_size": 64, "status": "ok", "p50_ms": 10.2, "p90_ms": 17.0, "p99_ms": 25.6},
    ]  # fmt: skip
    assert Image.open(latency_png(tmp_path / "lat.png", rows, "title")).format == "PNG"
    (ax1, ax2) = [ax for ax in figs[0].axes if ax.get_visible()]
    # A log time axis spanning the fastest p50 and the slowest p99, and each p50 written beside its dot.
    assert ax1.get_xscale() == "log" and ax1.get_xlim()[0] < 2.28 and ax1.get_xlim()[1] > 2558.3
    assert [t.get_text() for t in ax1.texts] == ["2044 ms", "2.28 ms"]
    assert [t.get_text() for t in ax1.get_yticklabels()] == ["torch", "ort"]
    assert ax2.get_title() == "batch 2, 64 px" and [t.get_text() for t in ax2.texts] == ["10.2 ms"]


def test_latency_plot_of_nothing_that_ran(tmp_path: Path) -> None:
    rows = [{"backend": "tensorrt", "batch": 1, "img_size": 64, "status": "skipped", "p50_ms": None}]
    assert Image.open(latency_png(tmp_path / "lat.png", rows, "title")).format == "PNG"
