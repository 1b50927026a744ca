"""``omsf2 bench``: every backend side by side on this machine, and the kernel micro-benchmark.

Layout: :mod:`~omsf2.bench.timing` (statistics and interleaved rounds), :mod:`~omsf2.bench.machine`
(ISA, fingerprint, GEMM ceilings), :mod:`~omsf2.bench.runners` (one class per backend, chosen by a
table), :mod:`~omsf2.bench.source` (what SOURCE holds, checked before any work),
:mod:`~omsf2.bench.report` (rows, recommendation, JSON/CSV/Markdown), :mod:`~omsf2.bench.run`
(:func:`~omsf2.bench.run.run_bench`, what the command calls) and :mod:`~omsf2.bench.kernels`.
Nothing here imports torch, onnxruntime or OpenVINO at import time.
"""
