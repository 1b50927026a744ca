"""Train one fold of a patient-level cross-validation: the run ``omsf2 train --folds K`` makes for fold ``i``.

Usage (from the repository root; ``bench/ablation.py --folds K`` calls it):

    .venv/bin/python bench/cv_fold.py --fold I --folds K --out OUT --opts '{"data": ..., "model": ...}'

``--opts`` holds ``omsf2 train``'s options by parameter name (``{"data": "../shared/data/cxr-real",
"model": "omsf2_tiny", "epochs": 15, "soft_distance": 0.0}``); they become the config through
:func:`omsf2.train.options.config_from_options`, the mapping ``omsf2 train`` itself uses, and the
run is :func:`omsf2.train.cv.cross_validate`'s run of fold ``i`` (the same config with ``folds=K,
fold=i``, in ``OUT/fold-<i>``). So ``omsf2 train ... --folds K --out OUT`` later keeps this fold as
finished, and an interrupted fold resumes with ``omsf2 train --resume OUT/fold-<i>/last.pt``.

The reason it exists: ``omsf2 train --folds K`` runs its K folds one after the other in one
process, while an ablation wants every variant's fold 0 before any variant's fold 1 (a partial
ablation is then paired fold by fold) and several folds side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from omsf2.train.loop import train
from omsf2.train.options import config_from_options


def main(argv: list[str] | None = None) -> int:
    """Train the fold; 0 when it finished, 130 when it was interrupted (resumable), 1 on a bad setting."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fold", type=int, required=True, help="the held-out fold, 0-based")
    ap.add_argument("--folds", type=int, required=True, help="K >= 2")
    ap.add_argument("--out", type=Path, required=True, help="the cross-validation's folder (gets fold-<i>/)")
    ap.add_argument("--opts", required=True, help="omsf2 train options by parameter name, as JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace a fold folder that holds another run")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        cfg = dataclasses.replace(config_from_options(json.loads(a.opts)), folds=a.folds, fold=a.fold)
    except ValueError as e:  # SettingError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    res = train(cfg, a.out / f"fold-{a.fold}", overwrite=a.overwrite)
    return 130 if res.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
