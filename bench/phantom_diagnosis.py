"""Why do the phantoms' val curves swing late in the schedule? Measure before changing anything.

Usage (from the repository root, with the package installed in .venv):

    OMP_NUM_THREADS=1 .venv/bin/python bench/phantom_diagnosis.py signal             # figure + signal table
    OMP_NUM_THREADS=1 .venv/bin/python bench/phantom_diagnosis.py train --model resnet18_plain_tiny --seed 0
    .venv/bin/python bench/phantom_diagnosis.py record                               # re-render the record

``signal`` renders normal and stage-I phantoms as training sees them (256 px phantoms letterboxed to
224 px), side by side with a zoom on one lung, and measures the opacities' contrast exactly: every
phantom is generated twice from the same random stream, once with its opacities and once without
(so anatomy, exposure and noise are identical), and the difference of the two at 224 px is the
signal. It also measures how the training augmentation's resampling (rotation, zoom, shift) and
added noise weaken that signal.

``train`` trains one run with ``omsf2 train``'s recipe (the same settings the ablation's phantoms
runs used: 600 phantoms, 15 epochs, 224 px, 1 thread) inside an instrumented trainer. After every
epoch it records, besides what ``metrics.json`` has: the learning rate and the weight average's
decay and update count; per-class loss, recall and the mean probability given to normal and stage
I, for the averaged weights, the raw weights, and the averaged weights with BatchNorm statistics
recomputed on train images (so a BatchNorm effect shows as a gap between the two); the same
per-class figures on 200 un-augmented train images (fit vs generalisation); which attention-guided
views the epoch drew; and the drift of the BatchNorm running statistics between epochs. The run is
the ablation's run bit for bit (same seed and threads: the extra evaluations draw no random numbers).

Everything is written to ``bench/results/phantom-diagnosis-<machine>.{json,md,png}`` by this script;
a run that finished is carried in the record, so the record survives a lost ``runs/`` folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS, curve_stability, machine

from omsf2.data import synthetic
from omsf2.data.preprocess import resize
from omsf2.fileio import atomic_write, write_json, write_text
from omsf2.train.augment import AugConfig, geometric
from omsf2.train.config import TrainConfig
from omsf2.train.ema import ema_decay_at
from omsf2.train.loop import Trainer
from omsf2.train.options import config_from_options
from omsf2.train.precise_bn import recompute_bn_stats
from omsf2.train.schedule import epoch_seed, lr_at

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "phantom-diagnosis"
STAGES = synthetic.STAGES
TRAIN_PROBE = 200  # un-augmented train images evaluated every epoch (fit, and BatchNorm recalibration)


#: The generator's tables before issue 25's fix, as a variant: "the generator as committed" in the
#: record is this (candidate C became the generator's own tables).
BEFORE = {"profusion": {"1": [7, 13], "2": [20, 30]}, "zones": {"1": [2, 4]}, "sizes": {"1": [0.6, 0.4, 0.0]}}

# -- the signal -------------------------------------------------------------------------------------
#: The phantoms' seed of the signal table and figure: one no training run, stability check or demo draws
#: (they use 0, 1, 2), so choosing a generator variant on this table chooses on none of the images that judge it.
SIGNAL_SEED = 1000


@contextlib.contextmanager
def _no_opacities() -> Iterator[None]:
    """Generate phantoms without their opacities (every random draw unchanged)."""
    saved = synthetic._disc_sum
    synthetic._disc_sum = lambda *a, **k: None  # type: ignore[assignment]
    try:
        yield
    finally:
        synthetic._disc_sum = saved  # type: ignore[assignment]


def _pair(seed: int, index: int, split: str, size: int, img: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """(image at ``img`` px, its opacity signal at ``img`` px, the phantom)."""
    ph = synthetic.generate_phantom(seed, index, split, size)
    with _no_opacities():
        bare = synthetic.generate_phantom(seed, index, split, size)
    a, b = resize(ph.image, (img, img)), resize(bare.image, (img, img))
    return a, a - b, ph


def _lung_noise(image: np.ndarray) -> float:
    """Pixel noise of an image: the std of its difference from a 3x3 mean, in the lung-field band."""
    x = torch.from_numpy(image)[None, None]
    hp = (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))[0, 0].numpy()
    h, w = image.shape
    band = hp[h // 4 : h * 3 // 4, w // 8 : w * 7 // 8]
    return float(band.std() * 3 / (8**0.5))  # a 3x3 mean's residual has 8/9 of the variance: per-pixel std


def _augmented_peak(signal: np.ndarray, seed: int) -> float:
    """The signal's 99.9th-percentile after the training recipe's geometric augmentation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(signal)[None, None].repeat(8, 1, 1, 1)
    out = geometric(x, AugConfig(), g)
    return float(np.mean([np.percentile(o, 99.9) for o in out[:, 0].numpy()]))


def _log_kernel(sigma: float = 1.0) -> torch.Tensor:
    """A zero-mean Laplacian-of-Gaussian blob filter (bright blob: positive response)."""
    r = math.ceil(3 * sigma)
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    k = -(x * x + y * y - 2 * sigma * sigma) / sigma**4 * g
    return torch.tensor(k - k.mean(), dtype=torch.float32)[None, None]


def _lung_mask(seed: int, index: int, split: str, size: int, img: int) -> np.ndarray:
    """Where the generator places opacities (inside a lung, outside the heart), at ``img`` px."""
    an = synthetic._Anatomy(synthetic._rng(seed, split, index), size)  # the anatomy's draws come first
    m = (np.maximum(an.lung_mask(0), an.lung_mask(1)) > 0.8) & (an.heart_mask() < 0.2)
    return resize(m.astype(np.float32), (img, img)) > 0.99


def _blobs(image: np.ndarray, mask: np.ndarray, threshold: float) -> int:
    """Blob-filter local maxima above ``threshold`` inside ``mask``: what a counting observer counts."""
    k = _log_kernel()
    r = F.conv2d(torch.from_numpy(image)[None, None], k, padding=k.shape[-1] // 2)
    peaks = (r == F.max_pool2d(r, 5, 1, 2)) & (r > threshold)
    return int((peaks[0, 0].numpy() & mask).sum())


def _clutter(image: np.ndarray, mask: np.ndarray) -> float:
    k = _log_kernel()
    r = F.conv2d(torch.from_numpy(image)[None, None], k, padding=k.shape[-1] // 2)[0, 0].numpy()
    return float(r[mask].std())


def _observer(counts: dict[str, list[float]]) -> float:
    """Best balanced accuracy of "stage I when the blob count is at least t" over every t (normal vs stage I)."""
    n, s1 = np.array(counts["normal"]), np.array(counts["stage_I"])
    return max(((n < t).mean() + (s1 >= t).mean()) / 2 for t in np.unique(np.concatenate([n, s1, [np.inf]])))


def measure_signal(
    n: int, size: int = 256, img: int = 224, seed: int = SIGNAL_SEED, blob_threshold: float = 0.25
) -> dict:
    """Per stage: opacity count, signal peak and pixel noise, blob-filter clutter and blob count; the observer.

    The blob filter (LoG, sigma 1 px at ``img`` px) is matched to a stage-I opacity; its response to the
    phantom drawn without opacities inside the lungs (``clutter``, std) is what the opacities must stand out
    from; ``blobs`` counts its local maxima above ``blob_threshold`` there. The observer stages normal vs
    stage I by that count alone.
    """
    rows: dict[str, dict[str, list[float]]] = {s: {} for s in STAGES}
    k = _log_kernel()
    for i in range(4 * n):
        a, sig, ph = _pair(seed, i, "val", size, img)
        mask = _lung_mask(seed, i, "val", size, img)
        r = rows[STAGES[ph.stage]]
        noise = _lung_noise(a)
        peak = float(np.percentile(sig, 99.9)) if ph.zone_counts.sum() else 0.0
        resp = F.conv2d(torch.from_numpy(sig)[None, None], k, padding=k.shape[-1] // 2)[0, 0].numpy()
        blob_peak = float(np.percentile(resp[mask], 99.9)) if ph.zone_counts.sum() else 0.0
        for key, v in (("count", float(ph.zone_counts.sum())), ("signal_peak", peak), ("noise", noise),
                       ("peak_over_noise", peak / noise), ("augmented_peak", _augmented_peak(sig, i) if peak else 0.0),
                       ("blob_peak", blob_peak), ("clutter", _clutter(a - sig, mask)),
                       ("blobs", float(_blobs(a, mask, blob_threshold)))):  # fmt: skip
            r.setdefault(key, []).append(v)
    out: dict[str, Any] = {
        s: {k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))} for k, v in r.items()}
        for s, r in rows.items()
    }
    blobs = {s: r["blobs"] for s, r in rows.items()}
    return {"stages": out, "observer_normal_vs_stage_I": _observer(blobs), "blob_threshold": blob_threshold}


def signal_figure(path: Path, size: int = 256, img: int = 224, seed: int = SIGNAL_SEED) -> None:
    """Normal and stage I at ``img`` px side by side, each with a 2x zoom of its upper right lung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 4, figsize=(13, 13))
    for col in range(4):
        for row, stage in enumerate((0, 1)):
            i = stage + 4 * col
            a, _, ph = _pair(seed, i, "val", size, img)
            ax, zoom = axes[2 * row, col], axes[2 * row + 1, col]
            ax.imshow(a, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{STAGES[stage]} (val {i}): {int(ph.zone_counts.sum())} opacities", fontsize=9)
            y0, x0 = img // 5, img // 8
            zoom.imshow(a[y0 : y0 + img // 3, x0 : x0 + img // 3], cmap="gray", interpolation="nearest")
            zoom.set_title("zoom: upper right lung, 224-px pixels", fontsize=8)
            for x in (ax, zoom):
                x.axis("off")
    fig.suptitle(f"phantoms as training sees them ({size} px generated, letterboxed to {img} px)")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=80))
    plt.close(fig)


SIGNAL_NOTE = (
    "Signal = the phantom minus the same phantom drawn without its opacities (same random stream: same anatomy, "
    "exposure and noise), both letterboxed 256 -> 224 px; signal peak = its 99.9th percentile; pixel noise = "
    "per-pixel std in the lung band; peak after augmentation = the signal's 99.9th percentile after the "
    "recipe's rotation, zoom and shift; blob filter = a Laplacian of Gaussian (sigma 1 px) matched to a stage-I "
    "opacity; its clutter = the std of its response to the opacity-free phantom inside the lungs (vessels, "
    "edges, noise); blobs = its local maxima above the threshold inside the lungs."
)


# -- the instrumented run ---------------------------------------------------------------------------
def _class_stats(logits: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Per-class loss, recall and mean probability of normal and stage I; macro-F1; confusion."""
    loss = F.cross_entropy(logits, y, reduction="none")
    prob = logits.softmax(1)
    pred = logits.argmax(1)
    k = logits.shape[1]
    conf = torch.zeros(k, k, dtype=torch.int64)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    tp = conf.diag().double()
    f1 = 2 * tp / (conf.sum(0) + conf.sum(1)).double().clamp_min(1)
    out: dict[str, Any] = {"macro_f1": float(f1.mean()) * 100, "confusion": conf.tolist()}
    for c, name in enumerate(STAGES[:k]):
        m = y == c
        out[name] = {
            "loss": float(loss[m].mean()),
            "recall": float((pred[m] == c).double().mean()) * 100,
            "p_normal": float(prob[m, 0].mean()),
            "p_stage_I": float(prob[m, 1].mean()),
        }
    return out


@torch.no_grad()
def _logits(model: torch.nn.Module, src: Any, idx: list[int]) -> torch.Tensor:
    model.eval()
    chunks = [idx[i : i + 64] for i in range(0, len(idx), 64)]
    return torch.cat([model(b.x)[0].float() for b in src.batches(chunks)])


def _recalibrated(model: torch.nn.Module, src: Any, idx: list[int]) -> torch.nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are recomputed on ``idx`` (cumulative)."""
    m = copy.deepcopy(model).eval()
    # Shuffled: batches of one class would miss the between-class variance (each batch's own variance
    # is what BatchNorm accumulates), and the statistics would be those of no training batch.
    order = [idx[i] for i in torch.randperm(len(idx), generator=torch.Generator().manual_seed(0)).tolist()]
    recompute_bn_stats(m, (b.x for b in src.batches([order[i : i + 32] for i in range(0, len(order), 32)])))
    return m


def _bn_state(model: torch.nn.Module) -> torch.Tensor:
    """All BatchNorm running means and log-variances, concatenated."""
    parts = []
    for b in model.modules():
        if isinstance(b, torch.nn.modules.batchnorm._BatchNorm) and b.running_mean is not None:
            parts += [b.running_mean.flatten(), b.running_var.clamp_min(1e-8).log().flatten()]  # type: ignore[union-attr]
    return torch.cat(parts).detach().clone() if parts else torch.zeros(0)


def _views(cfg: TrainConfig, epoch: int, steps: int) -> dict[str, int]:
    """The attention-guided views drawn in ``epoch`` (0-based): the loop's own draw, replayed."""
    names = cfg.aug.attention
    out = {a.value: 0 for a in names} | {"none": 0}
    for step in range(steps):
        draw = torch.rand(2, generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, step)))
        if names and float(draw[0]) < cfg.aug.attention_prob:
            out[names[int(draw[1] * len(names)) % len(names)].value] += 1
        else:
            out["none"] += 1
    return out


class DiagTrainer(Trainer):
    """The library's trainer, with an extra record per epoch (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, **kw: Any) -> None:
        super().__init__(cfg, out_dir, **kw)
        self.epochs: list[dict[str, Any]] = []
        self._bn_prev: dict[str, torch.Tensor] = {}
        self._has_att: bool | None = None

    def _validate(self, p: Any, st: Any, t_epoch: float) -> Any:
        v = super()._validate(p, st, t_epoch)
        t0 = time.perf_counter()
        if self._has_att is None:  # variants without attention maps draw no view
            with torch.no_grad():
                self._has_att = p.eval_model.forward_train(next(p.val_src.batches([[0]])).x).attention is not None
        val_idx = list(range(len(p.val_src)))
        per_class = min(TRAIN_PROBE // 4, len(p.train_src) // 4)
        probe = [i for c in range(4) for i in (p.train_src.y == c).nonzero().flatten().tolist()[:per_class]]
        ema, raw = p.eval_model, p.model
        rec = _recalibrated(ema, p.train_src, probe)
        yv, yt = p.val_src.y, p.train_src.y[probe]
        row: dict[str, Any] = {
            "epoch": st.epoch + 1,
            "lr_end": lr_at(self.cfg, (st.epoch + 1) * p.steps - 1, p.steps),
            "ema": None
            if p.ema is None
            else {
                "updates": p.ema.updates,
                "decay_now": ema_decay_at(p.ema.decay, p.ema.updates),
                "decay_cap": p.ema.decay,
            },
            "val": {
                "ema": _class_stats(_logits(ema, p.val_src, val_idx), yv),
                "raw": _class_stats(_logits(raw, p.val_src, val_idx), yv),
                "ema_bn_recalibrated": _class_stats(_logits(rec, p.val_src, val_idx), yv),
            },
            "train_probe": {"ema": _class_stats(_logits(ema, p.train_src, probe), yt)},
            "views": _views(self.cfg, st.epoch, p.steps) if self._has_att else {"none": p.steps},
            "bn_drift": {},
            "train_loss": v.record["train_loss"],
        }
        for name, m in (("ema", ema), ("raw", raw)):
            now = _bn_state(m)
            prev = self._bn_prev.get(name)
            row["bn_drift"][name] = None if prev is None else float((now - prev).norm() / prev.norm().clamp_min(1e-8))
            self._bn_prev[name] = now
        row["diag_s"] = time.perf_counter() - t0
        self.epochs.append(row)
        write_json(self.out / "diag.json", {"epochs": self.epochs})
        return v


@contextlib.contextmanager
def generator_variant(spec: dict[str, Any]) -> Iterator[None]:
    """Phantoms drawn under another class definition, in this process (training loads with ``workers=0``).

    ``spec``: ``{"profusion": {category: [lo, hi]}, "zones": {stage: [lo, hi]}, "sizes": {stage: [p, q, r]}}``:
    per-zone opacity counts of a profusion category, affected zones and size-type weights of a stage,
    replacing :mod:`omsf2.data.synthetic`'s tables.
    """
    counts, rules = dict(synthetic._PROFUSION_COUNT), dict(synthetic._STAGE_RULES)
    for cat, rng in spec.get("profusion", {}).items():
        synthetic._PROFUSION_COUNT[int(cat)] = (int(rng[0]), int(rng[1]))
    for stage, rng in spec.get("zones", {}).items():
        _, prof, weights = synthetic._STAGE_RULES[int(stage)]
        synthetic._STAGE_RULES[int(stage)] = ((int(rng[0]), int(rng[1])), prof, weights)
    for stage, weights in spec.get("sizes", {}).items():
        zones, prof, _ = synthetic._STAGE_RULES[int(stage)]
        synthetic._STAGE_RULES[int(stage)] = (zones, prof, tuple(float(w) for w in weights))
    try:
        yield
    finally:
        synthetic._PROFUSION_COUNT.clear()
        synthetic._PROFUSION_COUNT.update(counts)
        synthetic._STAGE_RULES.clear()
        synthetic._STAGE_RULES.update(rules)


def run_config(model: str, seed: int, phantoms: int, epochs: int, extra: dict[str, Any]) -> TrainConfig:
    """The config ``omsf2 train --data synthetic --synthetic-n N --model M --epochs E --img-size 224
    --seed S --workers 0 --device cpu --precise-bn 0`` builds (the ablation's phantoms runs), plus
    ``extra`` options. Precise BatchNorm is off: the diagnosis evaluates the weights as kept and
    recalibrated side by side itself, as it did before precise BatchNorm became the default."""
    opts = {"data": "synthetic", "synthetic_n": phantoms, "model": model, "epochs": epochs, "img_size": 224,
            "seed": seed, "workers": 0, "device": "cpu", "attention_prob": 0.5, "precise_bn": 0,
            **extra}  # fmt: skip
    return config_from_options(opts)


def train_one(name: str, cfg: TrainConfig, gen: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (from scratch: the diagnosis does not resume) into runs/phantom-diagnosis/<name>.

    ``gen``: a generator variant (:func:`generator_variant`) the run's phantoms are drawn under.
    """
    out = RUNS / name
    done = out / "diag.json"
    metrics = out / "metrics.json"
    if done.is_file() and metrics.is_file():
        m = json.loads(metrics.read_text())
        d = json.loads(done.read_text())
        if len(m["history"]) == cfg.epochs and len(d["epochs"]) == cfg.epochs:
            return _summary(cfg, m, d["epochs"]) | {"generator_variant": gen or {}}
    t = DiagTrainer(cfg, out, overwrite=True)
    with generator_variant(gen or {}):
        res = t.run()
    if res.interrupted:
        raise SystemExit("interrupted; run the same command again (it starts this run afresh)")
    return _summary(cfg, json.loads(metrics.read_text()), t.epochs) | {"generator_variant": gen or {}}


def _summary(cfg: TrainConfig, metrics: dict[str, Any], epochs: list[dict[str, Any]]) -> dict[str, Any]:
    hist = metrics["history"]
    return {
        "model": cfg.model,
        "seed": cfg.seed,
        "config": {
            k: v for k, v in cfg.to_dict().items() if k in ("epochs", "lr", "batch_size", "ema", "soft_distance")
        },
        "data": cfg.data.to_dict(),
        "threads": torch.get_num_threads(),
        "curve_macro_f1": [round(100 * h["macro_f1"], 2) for h in hist],
        "stability": curve_stability(hist),
        "train_s": sum(h.get("epoch_s", 0.0) for h in hist),
        "epochs": epochs,
    }


# -- BatchNorm statistics at fixed weights -------------------------------------------------------------
def _stratified(y: torch.Tensor, batch: int, g: torch.Generator) -> list[int]:
    """One batch holding every class in equal shares (drawn without replacement within a class)."""
    k = int(y.max()) + 1
    per = [c[torch.randperm(len(c), generator=g)].tolist() for c in (torch.nonzero(y == i).flatten() for i in range(k))]
    return [i for c in per for i in c[: batch // k]]


@torch.no_grad()
def _refresh_bn(model: torch.nn.Module, p: Any, batches: list[list[int]], cfg: TrainConfig, augment: bool) -> None:
    """Run ``batches`` through the BatchNorm layers as training steps do, from the model's own statistics.

    Momentum stays the layers' own (0.1): the statistics end as the loop's would after these steps with
    the weights frozen (after 30 steps the starting statistics weigh 0.9^30 = 4 %).
    """
    from omsf2.train.augment import intensity

    bns = [b for b in model.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for b in bns:
        b.train()
    for batch in p.train_src.batches(batches):
        x = batch.x
        if augment:
            x = intensity(geometric(x, cfg.aug, p.aug_gen), p.mean, p.std, cfg.aug, p.aug_gen)
        model(x)
    model.eval()


def bn_experiment(cfg: TrainConfig, ckpt: Path, draws: int = 8, steps: int = 30) -> dict[str, Any]:
    """Val figures of one checkpoint's raw weights under BatchNorm statistics from ``draws`` batch streams.

    Arms: the recipe's batches (random composition, augmented), random un-augmented batches, and
    class-stratified augmented batches (every batch holds each class in equal shares). The weights never
    change: the spread within an arm is what BatchNorm's running statistics alone do to the figures.
    """
    from omsf2.models.checkpoint import load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(ckpt)
    t = Trainer(cfg, RUNS / "bn-scratch", overwrite=True)
    p = t._setup()
    stored = model_from_checkpoint({**ck, "model": ck.get("raw_model", ck["model"])})
    y = p.train_src.y
    val_idx = list(range(len(p.val_src)))
    arms: dict[str, Any] = {"stored": _class_stats(_logits(stored, p.val_src, val_idx), p.val_src.y)}
    for arm in ("recipe", "no_augmentation", "stratified"):
        rows = []
        for d in range(draws):
            g = torch.Generator().manual_seed(1000 * d + 7)
            p.aug_gen.manual_seed(d)
            if arm == "stratified":
                batches = [_stratified(y, cfg.batch_size, g) for _ in range(steps)]
            else:
                batches = [torch.randperm(len(y), generator=g)[: cfg.batch_size].tolist() for _ in range(steps)]
            model = copy.deepcopy(stored)
            _refresh_bn(model, p, batches, cfg, augment=arm != "no_augmentation")
            st = _class_stats(_logits(model, p.val_src, val_idx), p.val_src.y)
            comp = [int((y[b] == 3).sum()) for b in batches[-10:]]
            rows.append({"macro_f1": st["macro_f1"], "normal_recall": st["normal"]["recall"],
                         "stage_I_recall": st["stage_I"]["recall"], "stage_III_last_10": sum(comp)})  # fmt: skip
        f1 = [r["macro_f1"] for r in rows]
        arms[arm] = {"draws": rows, "macro_f1_min": min(f1), "macro_f1_max": max(f1),
                     "macro_f1_std": float(np.std(f1, ddof=1)) if len(f1) > 1 else 0.0}  # fmt: skip
    return {
        "checkpoint": str(ckpt.relative_to(REPO)) if ckpt.is_relative_to(REPO) else ckpt.name,
        "epoch": ck["train_state"]["epoch"],
        "steps": steps,
        "arms": arms,
    }


# -- the record -------------------------------------------------------------------------------------
def _record_path() -> Path:
    return RESULTS / f"phantom-diagnosis-{machine()[0]}.json"


def _load_record() -> dict[str, Any]:
    try:
        return json.loads(_record_path().read_text())
    except (OSError, ValueError):
        return {"scenario": "phantom-diagnosis", "signal": None, "runs": {}}


def _plot_runs(runs: dict[str, Any], path: Path) -> None:
    """Per run: val macro-F1 of the three weight sets, normal / stage-I recall on val and train, lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.3 * len(runs)), squeeze=False)
    for (name, r), (a0, a1, a2) in zip(runs.items(), axes, strict=True):
        ep = [e["epoch"] for e in r["epochs"]]
        for key, style in (("ema", "-"), ("raw", ":"), ("ema_bn_recalibrated", "--")):
            a0.plot(ep, [e["val"][key]["macro_f1"] for e in r["epochs"]], style, marker=".", label=key)
        a0.set(title=f"{name}: val macro-F1", ylim=(0, 100))
        for cls, c in (("normal", "tab:blue"), ("stage_I", "tab:orange")):
            a1.plot(ep, [e["val"]["ema"][cls]["recall"] for e in r["epochs"]], "-", color=c, label=f"{cls} val")
            a1.plot(ep, [e["train_probe"]["ema"][cls]["recall"] for e in r["epochs"]], ":", color=c,
                    label=f"{cls} train (no aug)")  # fmt: skip
        a1.set(title="recall (averaged weights)", ylim=(0, 100))
        a2.plot(ep, [e["lr_end"] * 1e3 for e in r["epochs"]], label="lr x 1e3")
        a2.plot(ep, [e["val"]["ema"]["normal"]["loss"] for e in r["epochs"]], label="val loss: normal")
        a2.plot(ep, [e["val"]["ema"]["stage_I"]["loss"] for e in r["epochs"]], label="val loss: stage I")
        a2.set(title="learning rate and per-class val loss")
        for ax in (a0, a1, a2):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            ax.set_xlabel("epoch")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)


def _markdown(rec: dict[str, Any]) -> str:
    lines = [f"# Phantom diagnosis ({rec.get('machine', '')})", "", rec.get("about", ""), ""]
    for name, sig in rec.get("signals", {}).items():
        lines += [f"## Signal at 224 px: {name} ({sig['n_per_stage']} val phantoms per stage, seed "
                  f"{sig.get('seed', 0)})", "",
                  f"Generator variant: `{json.dumps(sig['generator_variant'])}`." if sig["generator_variant"] else
                  "The generator as committed then (its tables are `BEFORE` in this script).",
                  "", f"![normal vs stage I]({sig['figure']})", "",
                  "| stage | opacities | signal peak | pixel noise | peak / noise | peak after augmentation "
                  "| blob-filter peak | blob-filter clutter | blobs counted |", "|" + "---|" * 9]  # fmt: skip
        for st, r in sig["stages"].items():
            keys = (
                "count",
                "signal_peak",
                "noise",
                "peak_over_noise",
                "augmented_peak",
                "blob_peak",
                "clutter",
                "blobs",
            )
            cells = [f"{r[k]['mean']:.3g} ({r[k]['min']:.3g}-{r[k]['max']:.3g})" for k in keys]
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
        lines += ["", f"Mean (min-max) per phantom. {SIGNAL_NOTE} A counting observer that calls stage I when at "
                  f"least t blobs (threshold {sig['blob_threshold']:g}) are found reaches "
                  f"{100 * sig['observer_normal_vs_stage_I']:.1f} % balanced accuracy on normal vs stage I at its "
                  "best t.", ""]  # fmt: skip
    for name, r in rec.get("runs", {}).items():
        st = r["stability"]
        arms = {arm: curve_stability([{"macro_f1": e["val"][arm]["macro_f1"] / 100} for e in r["epochs"]])
                for arm in ("raw", "ema_bn_recalibrated")}  # fmt: skip
        recal = arms["ema_bn_recalibrated"]
        lines += [f"## {name}", "", f"`{r['model']}`, seed {r['seed']}, {r['threads']} thread(s); worst dip after "
                  f"the first third {st['worst_dip_after_first_third']:.1f} points at epoch {st['worst_dip_epoch']} "
                  f"(best {st['best_macro_f1']:.1f} at epoch {st['best_epoch']}). The same rule on the raw weights: "
                  f"{arms['raw']['worst_dip_after_first_third']:.1f} points; on the averaged weights with BatchNorm "
                  f"statistics recomputed on train images: {recal['worst_dip_after_first_third']:.1f}"
                  f" points (best {recal['best_macro_f1']:.1f}, final "
                  f"{r['epochs'][-1]['val']['ema_bn_recalibrated']['macro_f1']:.1f}).", "",
                  "| epoch | lr | EMA decay now | val F1 EMA | val F1 raw | val F1 BN recal. | normal recall val "
                  "| stage I recall val | normal recall train | stage I recall train | val loss normal | val loss I "
                  "| views drawn | BN drift (EMA) |", "|" + "---|" * 14]  # fmt: skip
        for e in r["epochs"]:
            v, t = e["val"], e["train_probe"]["ema"]
            views = ", ".join(f"{k} {n}" for k, n in e["views"].items() if n)
            drift = e["bn_drift"]["ema"]
            lines.append(
                f"| {e['epoch']} | {e['lr_end']:.2e} | {e['ema']['decay_now'] if e['ema'] else 0:.3f} "
                f"| {v['ema']['macro_f1']:.1f} | {v['raw']['macro_f1']:.1f} "
                f"| {v['ema_bn_recalibrated']['macro_f1']:.1f} "
                f"| {v['ema']['normal']['recall']:.0f} | {v['ema']['stage_I']['recall']:.0f} "
                f"| {t['normal']['recall']:.0f} | {t['stage_I']['recall']:.0f} | {v['ema']['normal']['loss']:.2f} "
                f"| {v['ema']['stage_I']['loss']:.2f} | {views} | {'—' if drift is None else f'{drift:.3f}'} |"
            )
        lines.append("")
    if rec.get("findings"):
        lines += ["## Findings", "", *[f"- {f}" for f in rec["findings"]], ""]
    if rec.get("runs"):
        lines += [f"![runs]({_record_path().with_suffix('.png').name})", ""]
    return "\n".join(lines)


def write_record(rec: dict[str, Any]) -> Path:
    """Write the record's JSON, its markdown and its plot."""
    desc = machine()[1]
    rec |= {"machine": desc, "date": time.strftime("%Y-%m-%d")}
    rec.setdefault("about", "")
    out = _record_path()
    write_json(out, rec)
    write_text(out.with_suffix(".md"), _markdown(rec))
    if rec.get("runs"):
        _plot_runs(rec["runs"], out.with_suffix(".png"))
    return out


def _extra(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` options (JSON values) added to the run's ``omsf2 train`` options."""
    out = {}
    for p in pairs:
        k, _, v = p.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def main() -> None:
    """Parse the command line and run one part."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=("signal", "train", "bn", "record"))
    ap.add_argument("--model", default="omsf2_tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phantoms", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--n-signal", type=int, default=50, help="val phantoms per stage for the signal table")
    ap.add_argument("--name", default="", help="the run's name in the record (default: model-seed)")
    ap.add_argument("--set", nargs="*", default=[], help="extra omsf2 train options as key=value")
    ap.add_argument("--ckpt", type=Path, help="bn: the last.pt whose raw weights are held fixed")
    ap.add_argument(
        "--gen",
        type=json.loads,
        default=None,
        help="a generator variant as JSON (default: the tables before issue 25's fix; {} = today's)",
    )
    a = ap.parse_args()
    if a.gen is None:
        a.gen = BEFORE
    update: dict[str, Any] = {}
    if a.part == "signal":
        name = a.name or "generator as committed"
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        fig = _record_path().with_name(f"{_record_path().stem}-{slug}.png")
        with generator_variant(a.gen or {}):
            signal_figure(fig)
            measured = measure_signal(a.n_signal)
        update["signal"] = (name, {"n_per_stage": a.n_signal, "seed": SIGNAL_SEED, "figure": fig.name, **measured,
                                   "generator_variant": a.gen or {}})  # fmt: skip
    elif a.part == "train":
        cfg = run_config(a.model, a.seed, a.phantoms, a.epochs, _extra(a.set))
        update["run"] = (a.name or f"{a.model}-seed{a.seed}", None)
        update["run"] = (update["run"][0], train_one(update["run"][0], cfg, a.gen))
    elif a.part == "bn":
        cfg = run_config(a.model, a.seed, a.phantoms, a.epochs, _extra(a.set))
        update["bn"] = (a.name or f"{a.model}-seed{a.seed}", bn_experiment(cfg, a.ckpt.resolve()))
    rec = _load_record()  # read after the work: another part may have written meanwhile
    if "signal" in update:
        rec.setdefault("signals", {})[update["signal"][0]] = update["signal"][1]
        rec.pop("signal", None)  # the single-entry layout of a first version
    if "run" in update:
        rec["runs"][update["run"][0]] = update["run"][1]
    if "bn" in update:
        rec.setdefault("bn_fixed_weights", {})[update["bn"][0]] = update["bn"][1]
    print(f"wrote {write_record(rec)} (.md, .png)")


if __name__ == "__main__":
    main()
