"""Synthetic pneumoconiosis phantoms: the embedded default dataset (numpy only, deterministic).

Each phantom is a chest-like radiograph in display convention (air dark, bone bright): torso and
soft tissue, two lung fields with a basal density gradient, heart and mediastinum, spine,
clavicles, posterior ribs, branching pulmonary vessels, diaphragm domes, then exposure, blur and
quantum noise that vary per image. The stage is set only by small round opacities, the way
ILO-style reading grades pneumoconiosis: their *profusion* (how many per lung zone), how many of
the six zones are affected, and their *size* type (p < 1.5 mm, q 1.5-3 mm, r 3-10 mm), plus large
opacities at stage III. Vessel cross-sections and a few stray dots at stage 0 make the targets
tiny and diffuse rather than trivially countable. The trade-off: the phantom is a test of the
pipeline's ability to see small diffuse targets, not a model of real disease.

Image ``i`` of split ``s`` under seed ``k`` depends only on ``(k, s, i)``, so any subset can be
regenerated, in any order, in parallel.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.config import SettingError

STAGES = ("normal", "stage_I", "stage_II", "stage_III")
SPLITS = {"train": 0, "val": 1, "test": 2}

# Zones: (upper, middle, lower) x (right, left); opacity counts per affected zone by profusion
# category. The ranges do not overlap: a reader (or a model) that counts can stage. Stage I was
# 7-13 per zone in 2-4 zones, mostly p, until a counting observer separated it from normal at only
# 90 % at 224 px (bench/phantom_diagnosis.py): its faintest cases were a few p dots that blur and
# noise erase. 12-18 per zone in 3-4 zones, mostly q, still below stage II's profusion, reads at 98 %.
_PROFUSION_COUNT = {0: (0, 2), 1: (12, 18), 2: (24, 34), 3: (42, 60)}
# (zones affected, profusion category, size-type weights p/q/r) per stage
_STAGE_RULES = {
    0: ((0, 0), 0, (1.0, 0.0, 0.0)),
    1: ((3, 4), 1, (0.3, 0.7, 0.0)),
    2: ((4, 6), 2, (0.3, 0.5, 0.2)),
    3: ((5, 6), 3, (0.1, 0.4, 0.5)),
}
# Opacity radius in millimetres by size type; converted to pixels with the phantom's scale.
_SIZE_MM = {0: (0.9, 1.4), 1: (1.6, 2.6), 2: (3.0, 4.5)}
_FIELD_MM = 380.0  # width of the imaged field


@dataclasses.dataclass(frozen=True)
class Phantom:
    """One generated radiograph.

    Attributes:
        image: float32 (size, size) in [0, 1], display convention.
        stage: 0-3.
        zone_counts: opacities per zone, shape (3, 2) (upper/middle/lower x right/left).
        patient_id: unique id (each phantom is its own patient).
    """

    image: np.ndarray
    stage: int
    zone_counts: np.ndarray
    patient_id: str


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index)]))


MAX_SIZE = 4096  # pixels per side; a 4096^2 phantom already takes ~1 GiB of float64 work arrays


def held_out_count(n: int) -> int:
    """Default size of the val and of the test split for ``n`` train phantoms: a quarter, at least 4.

    The one place this rule lives (the dataset writer, the in-memory ``synthetic`` source, the
    demo and the CLI's progress totals all call it).
    """
    return max(4, n // 4)


def stage_of(index: int) -> int:
    """Stage of phantom ``index``: round-robin, so every split is balanced."""
    return index % len(STAGES)


def _gauss1d(sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img
    k = _gauss1d(sigma)
    pad = len(k) // 2
    p = np.pad(img, pad, mode="reflect")
    # Separable convolution as a sum of shifted slices: exact, vectorised, no scipy.
    dtype = np.result_type(img, k)
    rows = np.zeros((p.shape[0], img.shape[1]), dtype)
    for i in range(len(k)):
        rows += k[i] * p[:, i : i + img.shape[1]]
    out = np.zeros(img.shape, dtype)
    for i in range(len(k)):
        out += k[i] * rows[i : i + img.shape[0], :]
    return out


def _splat(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, amp: np.ndarray) -> None:
    """Add ``amp`` at sub-pixel points (ys, xs) with bilinear weights, in place."""
    h, w = img.shape
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    fy = ys - y0
    fx = xs - x0
    for dy, dx, wgt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy = y0 + dy
        xx = x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(img, (yy[ok], xx[ok]), (amp * wgt)[ok])


def _disc_sum(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, rad: np.ndarray, amp: np.ndarray) -> None:
    """Add soft-edged discs (radius ``rad`` px, height ``amp``) in place; small patches only."""
    h, w = img.shape
    for y, x, r, a in zip(ys, xs, rad, amp, strict=True):
        e = math.ceil(r + 1.5)
        y0, y1 = max(0, int(y) - e), min(h, int(y) + e + 2)
        x0, x1 = max(0, int(x) - e), min(w, int(x) + e + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.sqrt((yy - y) ** 2 + (xx - x) ** 2)
        # A sphere's projected thickness, with a half-pixel soft edge: round, not square, at any size.
        t = np.sqrt(np.clip(1 - (d / (r + 0.5)) ** 2, 0, 1))
        img[y0:y1, x0:x1] += a * t


class _Anatomy:
    """Per-image random anatomy in normalised coordinates (x, y in [-1, 1], y down)."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.x = (xx + 0.5) / size * 2 - 1
        self.y = (yy + 0.5) / size * 2 - 1
        self.cx = rng.normal(0, 0.02)
        self.scale = rng.uniform(0.92, 1.04)
        self.apex = rng.uniform(-0.78, -0.68)
        self.base = rng.uniform(0.45, 0.58)
        self.gap = rng.uniform(0.06, 0.09) * self.scale
        self.width = rng.uniform(0.58, 0.66) * self.scale
        self.heart_r = (rng.uniform(0.30, 0.36), rng.uniform(0.24, 0.30))

    def lung_mask(self, side: int) -> np.ndarray:
        """Soft mask (0..1) of the right (side=0, image left) or left lung."""
        sgn = -1 if side == 0 else 1
        u = (self.x - self.cx) * sgn  # distance from the midline, towards this lung's side
        v = (self.y - self.apex) / (self.base - self.apex)  # 0 at the apex, 1 at the base
        vc = np.clip(v, 0, None)
        # Rounded apex, widest at the base; the medial edge leans in at the top.
        lateral = self.gap + self.width * (0.25 + 0.75 * np.sin(np.pi / 2 * np.clip(vc, 0, 1)) ** 0.5)
        medial = self.gap + 0.08 * np.clip(1 - 2.5 * vc, 0, 1)
        # Diaphragm dome: the base rises towards the middle of each hemithorax.
        mid = (lateral + medial) / 2
        dome = 1.0 - 0.12 * np.clip(1 - ((u - mid) / (lateral - medial + 1e-6) * 2) ** 2, 0, 1)
        d = np.minimum.reduce([(u - medial) / 0.04, (lateral - u) / 0.04, v / 0.06, (dome - v) / 0.05])
        # The heart displaces the lower medial lung.
        return np.clip(d, 0, 1) * (1 - self.heart_mask())

    def heart_mask(self) -> np.ndarray:
        """Soft heart silhouette, bulging to the image right (the patient's left)."""
        rx, ry = self.heart_r
        e = ((self.x - self.cx - 0.09) / rx) ** 2 + ((self.y - (self.base - 0.06)) / ry) ** 2
        return np.clip((1 - e) * 2, 0, 1)

    def zone_of(self, ys: np.ndarray) -> np.ndarray:
        """Zone row (0 upper, 1 middle, 2 lower) of normalised heights ``ys`` within a lung."""
        frac = (ys - self.apex) / (self.base - self.apex)
        return np.clip((frac * 3).astype(np.int64), 0, 2)


def _render_anatomy(rng: np.random.Generator, an: _Anatomy) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    s = an.size
    x, y = an.x - an.cx, an.y
    # Torso: a rounded box with sloping shoulders and a neck; brighter (thicker) towards the midline.
    shoulder = -0.80 + 0.25 * np.clip(np.abs(x) - 0.25, 0, None) ** 1.5
    torso = np.clip(np.minimum((0.96 * an.scale - np.abs(x)) / 0.08, (y - shoulder) / 0.08), 0, 1)
    neck = np.clip((0.16 - np.abs(x)) / 0.04, 0, 1) * (y < -0.7)
    body = np.maximum(torso, neck) * (0.7 + 0.3 * np.clip(1 - np.abs(x), 0, 1))
    img = 0.45 * body
    lungs = [an.lung_mask(0), an.lung_mask(1)]
    lung = np.maximum(lungs[0], lungs[1])
    # Air: dark lungs, denser towards the bases and the periphery (soft tissue overlap).
    depth = 0.33 - 0.07 * np.clip((y - an.apex) / (an.base - an.apex), 0, 1) - 0.05 * np.abs(x)
    img = img - lung * depth
    heart = an.heart_mask()
    medi = np.clip((0.09 - np.abs(x)) / 0.03, 0, 1) * (y > -0.85)
    img += 0.16 * np.maximum(heart, 0.6 * medi)
    # Spine, faint through the mediastinum, with vertebral bodies.
    img += 0.04 * np.clip((0.05 - np.abs(x)) / 0.015, 0, 1) * (0.8 + 0.2 * np.cos(y * 38))
    # Posterior ribs: arcs that run laterally and down from the spine, bright at their edges.
    n_ribs = int(rng.integers(9, 12))
    step = (an.base - an.apex) * 1.1 / n_ribs
    for r in range(n_ribs):
        y0 = an.apex - 0.06 + r * step
        ax = np.abs(x)
        curve = y0 - 0.10 * ax + 0.55 * ax**2
        d = np.abs(y - curve) / (0.020 + 0.004 * r / n_ribs)
        band = np.clip(1 - d, 0, 1) * (ax > 0.05) * (ax < 0.92)
        img += 0.06 * band + 0.04 * np.clip(1 - np.abs(d - 0.85) * 5, 0, 1) * band
    # Clavicles.
    cl = an.apex + 0.03 + 0.10 * (np.abs(x) - 0.35) ** 2
    img += 0.08 * np.clip(1 - np.abs(y - cl) / 0.025, 0, 1) * (np.abs(np.abs(x) - 0.35) < 0.30)
    # Pulmonary vessels: branching paths from each hilum, tapering to the periphery.
    vessels = np.zeros((s, s), np.float32)
    for side in (0, 1):
        sgn = -1 if side == 0 else 1
        hx = (an.cx + sgn * (an.gap + 0.12) + 1) / 2 * s
        hy = (an.apex + 0.55 * (an.base - an.apex) + 1) / 2 * s
        for _ in range(int(rng.integers(10, 16))):
            ang = rng.uniform(-1.4, 1.4) + (math.pi if sgn < 0 else 0.0)
            # Start each vessel somewhere in the hilum, not at one point.
            py, px, amp = hy + rng.normal(0, 0.04 * s), hx + rng.normal(0, 0.015 * s), 0.045
            steps = int(rng.integers(50, 100)) * s // 256
            pts = np.empty((steps, 3))
            for t in range(steps):
                ang += rng.normal(0, 0.07)
                px += math.cos(ang) * 0.7 * s / 256
                py += math.sin(ang) * 0.7 * s / 256
                amp *= 0.98
                pts[t] = (py, px, amp)
            _splat(vessels, pts[:, 0], pts[:, 1], pts[:, 2])
    img += _blur(vessels, 0.6 * s / 256) * 2.5 * lung
    return img.astype(np.float32), lungs, heart


def generate_phantom(seed: int, index: int, split: str = "train", size: int = 256) -> Phantom:
    """Generate phantom ``index`` of ``split`` under ``seed``.

    Args:
        seed: dataset seed.
        index: phantom index; its stage is ``index % 4``.
        split: "train", "val" or "test" (independent streams of phantoms).
        size: square image size in pixels (>= 64).

    Returns:
        The :class:`Phantom`.
    """
    if size < 64:
        raise ValueError(f"phantom size must be >= 64 pixels, got {size}")
    rng = _rng(seed, split, index)
    stage = stage_of(index)
    an = _Anatomy(rng, size)
    img, lungs, heart = _render_anatomy(rng, an)
    px_per_mm = size / _FIELD_MM

    (zlo, zhi), prof, size_w = _STAGE_RULES[stage]
    counts = np.zeros((3, 2), np.int64)
    if stage == 0:
        # A normal film may still show a couple of stray dots (profusion 0/1): not a stage.
        n_stray = int(rng.integers(*_PROFUSION_COUNT[0], endpoint=True))
        zones = rng.choice(6, size=n_stray, replace=True)
        for z in zones:
            counts[z // 2, z % 2] += 1
    else:
        n_zones = int(rng.integers(zlo, zhi, endpoint=True))
        # Pneumoconiosis starts in the upper and middle zones: weight them when choosing.
        zone_p = np.array([3, 3, 2.5, 2.5, 1.5, 1.5], float)
        zones = rng.choice(6, size=n_zones, replace=False, p=zone_p / zone_p.sum())
        lo, hi = _PROFUSION_COUNT[prof]
        for z in zones:
            counts[z // 2, z % 2] = int(rng.integers(lo, hi, endpoint=True))

    opac = np.zeros_like(img)
    for side in (0, 1):
        # Rejection-sample opacity centres inside this lung, per zone.
        # Inside this lung, outside the heart shadow (where a reader would not grade).
        ys_all, xs_all = np.nonzero((lungs[side] > 0.8) & (heart < 0.2))
        if len(ys_all) == 0:
            continue
        zone_all = an.zone_of(an.y[ys_all, xs_all])
        for zrow in range(3):
            n = int(counts[zrow, side])
            cand = np.nonzero(zone_all == zrow)[0]
            if n == 0 or len(cand) == 0:
                continue
            pick = rng.choice(cand, size=n, replace=True)
            ys = ys_all[pick] + rng.uniform(-0.5, 0.5, n)
            xs = xs_all[pick] + rng.uniform(-0.5, 0.5, n)
            types = rng.choice(3, size=n, p=np.asarray(size_w) / sum(size_w))
            rad = np.array([rng.uniform(*_SIZE_MM[int(t)]) for t in types]) * px_per_mm
            amp = rng.uniform(0.10, 0.16, n)
            _disc_sum(opac, ys, xs, rad, amp)
    if stage == 3 and rng.random() < 0.5:
        # Large opacity (category A): coalescence in an upper zone.
        side = int(rng.integers(0, 2))
        ys_all, xs_all = np.nonzero((lungs[side] > 0.9) & (an.zone_of(an.y) == 0))
        if len(ys_all):
            k = int(rng.integers(len(ys_all)))
            r = rng.uniform(10, 18) * px_per_mm
            _disc_sum(opac, ys_all[k : k + 1], xs_all[k : k + 1], np.array([r]), np.array([0.12]))
    img = img + opac * np.maximum(lungs[0], lungs[1])

    # Acquisition: exposure/contrast (a gamma), detector blur, quantum + electronic noise.
    img = _blur(img, rng.uniform(0.3, 0.6) * size / 256)
    vmin, vmax = float(img.min()), float(img.max())
    img = (img - vmin) / max(vmax - vmin, 1e-6)
    img = np.clip(img * rng.uniform(0.85, 1.0) + rng.uniform(0.0, 0.08), 0, 1) ** rng.uniform(0.8, 1.25)
    noise = rng.normal(0, 1, img.shape) * (rng.uniform(0.008, 0.02) + 0.015 * np.sqrt(img))
    img = np.clip(img + noise, 0, 1).astype(np.float32)
    return Phantom(img, stage, counts, f"phantom-{seed}-{split}-{index:06d}")


def iter_phantoms(n: int, seed: int, split: str = "train", size: int = 256) -> Iterator[Phantom]:
    """Yield phantoms ``0 .. n-1`` of ``split`` (balanced over the four stages)."""
    if n < 0:
        raise ValueError(f"number of phantoms must be >= 0, got {n}")
    for i in range(n):
        yield generate_phantom(seed, i, split, size)


def _write_one(args: tuple[str, int, str, int, int]) -> tuple[str, str, str, str]:
    from PIL import Image

    root, seed, split, index, size = args
    ph = generate_phantom(seed, index, split, size)
    rel = f"{split}/{STAGES[ph.stage]}/{ph.patient_id}.png"
    Image.fromarray(np.round(ph.image * 255).astype(np.uint8), mode="L").save(f"{root}/{rel}", optimize=False)
    return rel, STAGES[ph.stage], split, ph.patient_id


_STAGING = ".{name}.staging-{pid}-"  # a run's temporary folder beside the target, named by its pid
_DATASET_ENTRIES = {"train", "val", "test", "labels.csv", "SOURCE.md", "synth.json"}
_SOURCE_TITLE = "# Synthetic pneumoconiosis phantoms"


def dataset_counts(n: int, n_val: int | None = None, n_test: int | None = None, size: int = 256) -> dict[str, int]:
    """Validate a dataset's settings and return the phantoms per split (no files touched).

    Args:
        n: train phantoms (>= 4, one per stage).
        n_val: val phantoms, default :func:`held_out_count`; 0 writes no val folder (training
            then splits val off train by patient).
        n_test: test phantoms, default :func:`held_out_count`; 0 writes no test folder.
        size: image size in pixels (64 to ``MAX_SIZE``).

    Raises:
        ValueError: naming the valid range.
    """
    counts = {
        "train": n,
        "val": held_out_count(n) if n_val is None else n_val,
        "test": held_out_count(n) if n_test is None else n_test,
    }
    for split, k in counts.items():
        if not (k >= 4 or (k == 0 and split != "train")):
            what = "train needs" if split == "train" else f"{split} needs 0 (no {split} folder) or"
            setting = {"train": "n", "val": "n_val", "test": "n_test"}[split]
            raise SettingError(f"{what} at least 4 phantoms (one per stage), got {k}", setting)
    if not 64 <= size <= MAX_SIZE:
        raise SettingError(f"phantom size must lie in [64, {MAX_SIZE}] pixels, got {size}", "size")
    return counts


def is_phantom_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds only what :func:`write_dataset` writes (so replacing it loses nothing else)."""
    names = {p.name for p in folder.iterdir()}
    source = folder / "SOURCE.md"
    return (
        names <= _DATASET_ENTRIES and source.is_file() and source.read_text(errors="replace").startswith(_SOURCE_TITLE)
    )


def _check_target(target: Path, overwrite: bool) -> None:
    if target.name in ("", ".", ".."):
        raise ValueError(f"'{target}' names no folder to create; give a new folder's name, e.g. 'phantoms'")
    if target.exists() and not target.is_dir():
        raise ValueError(f"'{target}' exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise SettingError(f"'{target}' is not empty; choose another folder or overwrite it", "overwrite")
        if not is_phantom_dataset(target):
            raise ValueError(
                f"'{target}' is not an omsf2 phantom dataset (it holds other files); refusing to replace it"
            )
    if Path.cwd().resolve().is_relative_to(target.resolve()):
        raise ValueError(f"'{target}' holds the current folder; refusing to replace it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove temporary folders beside ``target`` left by runs that died (SIGKILL, power cut)."""
    removed = []
    prefix = f".{target.name}.staging-"
    for p in target.parent.glob(prefix + "*") if target.parent.is_dir() else ():
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if p.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the block (main thread only), so clean-up code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _mkdir_staging(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_STAGING.format(name=target.name, pid=os.getpid()), dir=target.parent))
    except OSError as e:
        raise ValueError(f"cannot write '{target}': {e.strerror or e}") from e
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the dataset gets what mkdir would give it
    return tmp


def _generate(tmp: Path, counts: dict[str, int], seed: int, size: int, workers: int, on_image: Any) -> list[Any]:
    jobs = []
    for split, k in counts.items():
        if k:
            for stage in STAGES:
                (tmp / split / stage).mkdir(parents=True, exist_ok=True)
        jobs += [(str(tmp), seed, split, i, size) for i in range(k)]
    rows: list[tuple[str, str, str, str]] = []
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        ex = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
        try:
            for row in ex.map(_write_one, jobs, chunksize=16):
                rows.append(row)
                if on_image:
                    on_image()
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)  # an interrupt must not wait for every queued image
            raise
        ex.shutdown()
    else:
        for job in jobs:
            rows.append(_write_one(job))
            if on_image:
                on_image()
    return rows


def write_dataset(
    out: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    size: int = 256,
    n_val: int | None = None,
    n_test: int | None = None,
    workers: int = 2,
    overwrite: bool = False,
    on_image: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Write phantoms as an image folder ``out/<split>/<stage>/*.png`` plus ``labels.csv``.

    Every setting and the target are checked before any image is made. The folder is built under
    a temporary name and renamed into place at the end, so an interrupted run (Ctrl-C or SIGTERM)
    leaves no half-written dataset; temporary folders of runs that died are removed on the next
    start. ``labels.csv`` has the columns of ../shared/data/cxr-real's (``file, label, split,
    patient_id``), so the folder loader reads patient ids from it.

    Args:
        out: target folder; it must not exist (or be empty), unless ``overwrite`` and it is an
            earlier phantom dataset.
        n: train phantoms (>= 4).
        seed: dataset seed.
        size: image size in pixels.
        n_val: val phantoms, default :func:`held_out_count`; 0 = no val folder.
        n_test: test phantoms, default :func:`held_out_count`; 0 = no test folder.
        workers: processes generating in parallel (0 or 1: in this process).
        overwrite: replace an existing phantom dataset (never a folder holding anything else).
        on_image: called after each image (progress).

    Returns:
        Images written per split.
    """
    target = Path(out)
    counts = dataset_counts(n, n_val, n_test, size)
    if workers < 0:
        raise SettingError(f"workers must be >= 0 (0 and 1 generate in this process), got {workers}", "workers")
    _check_target(target, overwrite)
    remove_stale_staging(target)
    with _sigterm_as_interrupt():
        tmp = _mkdir_staging(target)
        try:
            rows = _generate(tmp, counts, seed, size, workers, on_image)
            with open(tmp / "labels.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["file", "label", "split", "patient_id"])
                w.writerows(rows)
            (tmp / "SOURCE.md").write_text(
                f"{_SOURCE_TITLE}\n\nGenerated by omsf2 (`omsf2 data synth`), seed {seed}, size {size}px: "
                f"{counts['train']} train, {counts['val']} val, {counts['test']} test. Not patient data: stages "
                "0/I/II/III differ in the profusion and size of small round opacities (see omsf2/data/synthetic.py).\n"
            )
            if target.exists():
                old = target.with_name(f".{target.name}.staging-{os.getpid()}-old")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return counts
