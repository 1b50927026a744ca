"""The end-to-end demo on the embedded default data: phantoms -> train -> evaluate.

``omsf2 demo`` is the README's first command: it writes a synthetic phantom dataset as an image
folder (reused when one with the same settings is already there), trains ``omsf2_tiny`` on it
through the same folder loader that real data uses, and evaluates ``best.pt`` on the val split
(used for model selection) and on the untouched test split.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omsf2.config import SettingError
from omsf2.data.datasets import DataSpec
from omsf2.data.synthetic import dataset_counts, write_dataset
from omsf2.evaluate import EvalSpec, evaluate_checkpoint
from omsf2.fileio import check_output_file, write_json
from omsf2.train.augment import AugConfig
from omsf2.train.config import TrainConfig
from omsf2.train.loop import Reporter, train


@dataclasses.dataclass(frozen=True)
class DemoSpec:
    """Settings of the demo; the defaults are what the README's first command runs.

    Attributes:
        out: folder for the dataset (``out/data``) and the run (``out/train``).
        n: train phantoms (val and test get a quarter each).
        seed: dataset and training seed.
        size: phantom size in pixels.
        model: variant to train.
        epochs: training epochs.
        batch_size: samples per step.
        img_size: model input size.
        workers: processes for data generation and loading.
        attention_prob: probability per step of an attention-guided view.
        export: export best.pt to ONNX + INT8 Q/DQ ONNX after evaluation.
        calib_count: calibration images for the INT8 export (from the train split).
        bench: end with a short ``omsf2 bench`` of the export (``out/bench``).
    """

    out: str = "runs/demo"
    n: int = 1600
    seed: int = 0
    size: int = 256
    model: str = "omsf2_tiny"
    epochs: int = 6
    batch_size: int = 32
    img_size: int = 224
    workers: int = 2
    attention_prob: float = 0.25
    export: bool = True
    calib_count: int = 256
    bench: bool = True

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise SettingError(f"workers must be >= 0, got {self.workers}", "workers")
        if self.calib_count < 1:
            raise ValueError(f"calibration count must be >= 1, got {self.calib_count}")
        dataset_counts(self.n, size=self.size)  # raises on a bad phantom count or size

    def train_config(self) -> TrainConfig:
        """The training run's configuration (validated on construction)."""
        return TrainConfig(
            data=DataSpec(source=str(Path(self.out) / "data")),
            model=self.model,
            epochs=self.epochs,
            batch_size=self.batch_size,
            img_size=self.img_size,
            seed=self.seed,
            workers=self.workers,
            aug=AugConfig(attention_prob=self.attention_prob),
        )


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    data_dir: Path
    run_dir: Path
    val: dict[str, Any]
    test: dict[str, Any]
    timings: dict[str, float]
    export: dict[str, Any] | None = None
    bench: Any = None  # omsf2.bench.run.BenchResult of the short bench, or why it did not finish (str)


def run_demo(
    spec: DemoSpec,
    reporter: Reporter | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_image: Callable[[], None] | None = None,
) -> DemoResult:
    """Run phantoms -> train -> evaluate; returns val and test metrics and stage timings.

    Every setting and the output folder are checked before the phantoms are generated.
    """
    out = Path(spec.out)
    data_dir = out / "data"
    run_dir = out / "train"
    cfg = spec.train_config()
    check_output_file(out / "summary.json")
    t0 = time.perf_counter()
    synth = {"n": spec.n, "seed": spec.seed, "size": spec.size}
    stamp = data_dir / "synth.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == synth):
        if on_stage:
            on_stage(f"writing {sum(dataset_counts(spec.n, size=spec.size).values())} phantoms to {data_dir}")
        write_dataset(data_dir, spec.n, spec.seed, spec.size, workers=spec.workers, overwrite=True, on_image=on_image)
        write_json(stamp, synth)
    elif on_stage:
        on_stage(f"reusing the phantoms in {data_dir}")
    t1 = time.perf_counter()
    if on_stage:
        on_stage(f"training {spec.model} for {spec.epochs} epochs in {run_dir}")
    result = train(cfg, run_dir, reporter, overwrite=True)  # the demo owns OUT/train
    if result.interrupted:
        raise KeyboardInterrupt
    t2 = time.perf_counter()
    if on_stage:
        on_stage("evaluating best.pt on the val and test splits")
    best = str(run_dir / "best.pt")
    val = evaluate_checkpoint(EvalSpec(best, split="val", workers=spec.workers)).metrics
    test = evaluate_checkpoint(EvalSpec(best, split="test", workers=spec.workers)).metrics
    t3 = time.perf_counter()
    export = bench = None
    if spec.export:
        from omsf2.export.calibration import MIN_CALIB_IMAGES
        from omsf2.export.targets import ExportSpec, run_export

        # INT8 calibration needs MIN_CALIB_IMAGES train phantoms; tiny demos (tests) export FP32 only, and say so.
        int8 = spec.n >= MIN_CALIB_IMAGES
        if on_stage:
            what = "ONNX and INT8 Q/DQ ONNX" if int8 else f"ONNX (no INT8: --n {spec.n} < {MIN_CALIB_IMAGES})"
            on_stage(f"exporting best.pt to {what} in {out / 'export'}")
        # A flavour that fails its INT8 gate even with mixed precision is reported (and not written);
        # the rest of the demo, and the artifacts that passed, stand.
        export = run_export(
            ExportSpec(
                best,
                str(out / "export"),
                int8=int8,
                calib_data=str(data_dir / "train") if int8 else None,
                calib_count=max(MIN_CALIB_IMAGES, min(spec.calib_count, spec.n)),
                eval_data=str(data_dir / "test"),
                fail_on_gate=False,
            ),
            on_stage,
        ).report
    t4 = time.perf_counter()
    if export is not None and spec.bench:
        from omsf2.bench.demo import demo_bench_isolated

        bench = demo_bench_isolated(out / "export", data_dir / "test", out / "bench", on_stage)
    t5 = time.perf_counter()
    timings = {"data_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2, "export_s": t4 - t3, "bench_s": t5 - t4}
    timings["total_s"] = t5 - t0
    summary = {"val": val, "test": test, "export": export, "timings": timings, "spec": dataclasses.asdict(spec)}
    write_json(out / "summary.json", summary)
    return DemoResult(data_dir, run_dir, val, test, timings, export, bench)
