"""One image size of ``omsf2 bench``: build the runners, time them with the ceilings, score accuracy.

Each (size, batch) group times every runnable backend and the FP32 / INT8 GEMM ceilings in the
same interleaved rounds. A backend that fails to load or to run its first batch becomes an
``error`` row with the exception's first line; the others go on. Accuracy uses the runners of the
largest batch (padding the last chunk), against labels and against PyTorch FP32's top-1.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omsf2.bench.report import Row
from omsf2.bench.runners import Backend, Runner, build_runner
from omsf2.bench.timing import Measured, interleaved_rounds, paired_speedup

if TYPE_CHECKING:
    from omsf2.bench.run import BenchSpec, Plan

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SizeResult:
    """Rows of one size, the ceiling rates measured (MAC/s, one per round) and notes."""

    rows: list[Row]
    ceilings: dict[str, list[float]]
    libraries: dict[str, str]
    notes: list[str]


def rss_mb() -> float | None:
    """This process's resident set size (MiB) from /proc (None where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


def _build(
    runnable: list[tuple[Backend, str | None]], ctx: Any, x: np.ndarray, say: Callable[[str], None]
) -> tuple[dict[str, tuple[Runner, Callable[[], object], float, float | None]], dict[str, str]]:
    """Runners that loaded and ran one batch: name -> (runner, bound call, load s, RSS added MiB); errors."""
    ok: dict[str, tuple[Runner, Callable[[], object], float, float | None]] = {}
    errors: dict[str, str] = {}
    for backend, artifact in runnable:
        say(f"loading {backend.name} (batch {ctx.batch}, {ctx.img_size} px)")
        t0, rss0 = time.perf_counter(), rss_mb()
        try:
            runner = build_runner(backend, ctx, artifact)
            call = runner.bind(x)
            call()  # the first call: compilation (torch-compile) and lazy initialisation happen here
        except Exception as e:  # any runtime's failure is this backend's row, not the whole bench
            log.debug("backend %s failed", backend.name, exc_info=True)
            errors[backend.name] = _one_line(e)
            continue
        rss1 = rss_mb()
        ok[backend.name] = (
            runner,
            call,
            time.perf_counter() - t0,
            None if rss0 is None or rss1 is None else rss1 - rss0,
        )
    return ok, errors


def _ceiling_calls(threads: int) -> tuple[dict[str, Any], list[str]]:
    from omsf2.bench.machine import ceiling_calls

    calls, notes = ceiling_calls(threads)
    return {c.name: c for c in calls}, notes


#: Name suffix of the ``--check-core`` calls in the rounds.
CORE_SUFFIX = " @ Predictor.run_batch"


def _core_calls(
    runnable: list[tuple[Backend, str | None]], built: dict[str, Any], ctx: Any, x: np.ndarray
) -> dict[str, Callable[[], object]]:
    """``--check-core``: every runtime backend that loaded, opened again on its own, as a user opens it.

    ``Predictor.from_bundle`` with the backend, threads and file of the bench's row, timed in the same
    interleaved rounds: the row and this call must agree, or the bench is timing something else.
    """
    import functools

    from omsf2.bench.runners import target_of
    from omsf2.runtime.predictor import Predictor

    calls: dict[str, Callable[[], object]] = {}
    xs = np.ascontiguousarray(x, np.float32)
    for backend, artifact in runnable:
        if backend.name in built and backend.runtime is not None and artifact is not None:
            p = Predictor.from_bundle(ctx.export_dir, backend.runtime, ctx.threads, artifact=target_of(artifact))
            p.run_batch(xs)  # the first call (OpenVINO compiles this batch size), outside the rounds
            calls[backend.name + CORE_SUFFIX] = functools.partial(p.run_batch, xs)
    return calls


def measure_size(
    spec: BenchSpec, plan: Plan, size: int, export_dir: Path | None, say: Callable[[str], None]
) -> SizeResult:
    """Time every runnable backend at ``size`` for each batch, then score accuracy."""
    from omsf2.bench.macs import onnx_macs
    from omsf2.bench.peak import estimate_peak
    from omsf2.bench.run import context_for, random_input

    macs = onnx_macs(export_dir / "model.onnx") if export_dir and (export_dir / "model.onnx").is_file() else None
    ceilings, notes = _ceiling_calls(plan.threads)
    peaks = estimate_peak(plan.threads)
    result = SizeResult([], {}, {c.name: c.library for c in ceilings.values()}, notes)
    last: dict[str, Runner] = {}
    for batch in spec.batches:
        ctx = context_for(plan, export_dir, batch, size)
        x = random_input(batch, ctx.channels, size)
        built, errors = _build(plan.runnable, ctx, x, say)
        rss: dict[str, float] = {}

        def on_round(r: int, name: str, rss: dict[str, float] = rss) -> None:
            now = rss_mb()
            if now is not None:
                rss[name] = max(rss.get(name, 0.0), now)

        core = _core_calls(plan.runnable, built, ctx, x) if spec.check_core else {}
        calls: dict[str, Callable[[], object]] = {}
        for n, (_, c, _, _) in built.items():  # each --check-core twin right after its row: the closest in time
            calls[n] = c
            calls.update({k: v for k, v in core.items() if k == n + CORE_SUFFIX})
        calls.update({c.name: c.call for c in ceilings.values()})
        say(f"timing {len(built)} backends and {len(ceilings)} ceilings at batch {batch}, {size} px")
        measured = interleaved_rounds(calls, spec.plan, on_round=on_round)
        by_call = {n: c.macs / (measured[n].stats.p50_ms / 1e3) for n, c in ceilings.items() if n in measured}
        for n in by_call:  # each round's rate: the record's spread over rounds
            per_round = (ceilings[n].macs / (ms / 1e3) for ms in measured[n].round_medians_ms)
            result.ceilings.setdefault(n, []).extend(per_round)
        # Per precision, the fastest library's rate in these rounds (gemm-fp32, gemm-int8) and the
        # silicon's estimated peak (peak-fp32, peak-int8).
        rates: dict[str, float] = {f"peak-{p}": pk.gmacs * 1e9 for p, pk in peaks.items()}
        for n, v in by_call.items():
            key = f"gemm-{ceilings[n].precision}"
            rates[key] = max(rates.get(key, 0.0), v)
        for backend, artifact in plan.runnable:
            precision = artifact.split(".")[1] if artifact and artifact.endswith(".engine") else backend.precision
            row = Row(backend.name, batch, size, precision=precision, artifact=artifact, macs_per_image=macs)
            if backend.name in errors:
                row.status, row.reason = "error", errors[backend.name]
            else:
                runner, _, load_s, row.rss_load_mb = built[backend.name]
                _fill(row, measured, rates, backend, load_s, rss.get(backend.name))
                row.note = runner.note
                if (twin := measured.get(backend.name + CORE_SUFFIX)) is not None:
                    # Paired per round, as x torch is: a round's drift in machine speed cancels.
                    row.core_p50_ms = twin.stats.p50_ms
                    row.core_ratio = paired_speedup(twin, measured[backend.name])
                gpu = getattr(runner, "gpu_ms", None)
                if gpu:
                    row.gpu_compute_ms = float(np.median(gpu))
            result.rows.append(row)
        for name, reason in plan.skipped.items():
            result.rows.append(Row(name, batch, size, status="skipped", reason=reason, macs_per_image=macs))
        last = {n: r for n, (r, _, _, _) in built.items()}
    if plan.evalset is not None and last:
        say(f"scoring accuracy of {len(last)} backends on {spec.eval_data}")
        _accuracy(result.rows, last, _eval_at(plan, size), max(spec.batches), size)
    else:
        _gate_accuracy(result.rows, plan)
    return result


def _fill(
    row: Row, measured: dict[str, Measured], rates: dict[str, float], backend: Backend, load_s: float,
    rss: float | None,
) -> None:  # fmt: skip
    m = measured[backend.name]
    st = m.stats
    row.p50_ms, row.mean_ms, row.p90_ms, row.p99_ms = st.p50_ms, st.mean_ms, st.p90_ms, st.p99_ms
    row.min_ms, row.max_ms, row.std_ms, row.n = st.min_ms, st.max_ms, st.std_ms, st.n
    row.throughput_ips = row.batch / (st.p50_ms / 1e3)
    row.noisy, row.round_spread = m.noisy, m.round_spread
    row.load_s, row.rss_mb = load_s, rss
    if "torch" in measured:
        row.speedup_vs_torch = paired_speedup(measured["torch"], m)
    best = max((v for k, v in rates.items() if k.startswith("gemm-")), default=0.0)
    if row.macs_per_image and best and backend.device == "cpu":  # CPU GEMM ceilings say nothing of a GPU
        done = row.macs_per_image * row.batch / (st.p50_ms / 1e3)
        row.efficiency = done / best
        own = rates.get("gemm-int8" if backend.precision == "int8" else "gemm-fp32")
        row.efficiency_own = done / own if own else None
        peak = rates.get(f"peak-{backend.precision}")  # fp32 and int8 only: no table for bf16 / fp16
        row.efficiency_peak = done / peak if peak else None


def _eval_at(plan: Plan, size: int) -> Any:
    """The eval images at ``size`` (reloaded through the same preprocessing when the size differs)."""
    if plan.source.img_size == size:
        return plan.evalset
    from omsf2.export.calibration import load_eval

    pre = dataclasses.replace(plan.source.preprocess, size=(size, size))
    return load_eval(plan.evalset.root, pre, plan.source.classes)


def predict_all(runner: Runner, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits of every image, ``batch`` at a time (the last chunk zero-padded to the static batch)."""
    outs = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        k = len(chunk)
        if k < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - k, *chunk.shape[1:]), chunk.dtype)])
        outs.append(np.asarray(runner.predict(chunk))[:k])
    return np.concatenate(outs)


def _accuracy(rows: list[Row], runners: dict[str, Runner], evalset: Any, batch: int, size: int) -> None:
    labels = np.asarray(evalset.labels)
    preds = {n: predict_all(r, evalset.images, batch).argmax(axis=1) for n, r in runners.items()}
    ref = "torch" if "torch" in preds else ("ort" if "ort" in preds else None)
    for row in rows:
        if row.img_size != size or row.backend not in preds:
            continue
        p = preds[row.backend]
        row.accuracy = float((p == labels).mean())
        if ref is not None:
            row.agreement = float((p == preds[ref]).mean())
            row.accuracy_drop = 100.0 * (float((preds[ref] == labels).mean()) - row.accuracy)
            row.accuracy_from = f"eval-data ({len(labels)} images) vs {ref}"


def _gate_accuracy(rows: list[Row], plan: Plan) -> None:
    """Without --eval-data: INT8 rows carry the export gate's accuracy drop (measured with onnxruntime)."""
    for row in rows:
        gate = plan.source.gate(row.artifact) if row.artifact else None
        if gate and row.status == "ok":
            row.accuracy = gate.get("int8_accuracy")
            row.agreement = gate.get("top1_agreement")
            row.accuracy_drop = gate.get("accuracy_drop")
            row.accuracy_from = "export gate (onnxruntime)"
