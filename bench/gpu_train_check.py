"""A few OMSF2 training steps on CUDA, checked against the same steps on the CPU from the same weights and batch.

Usage (from the repository root):

    python bench/gpu_train_check.py [--model omsf2_tiny] [--img-size 224] [--batch 8] [--steps 4] [--device cuda]

Builds one model, copies its weights to the CPU and to ``--device``, and takes ``--steps`` SGD steps on
the same batch of phantoms (the training loop's own loss, :func:`omsf2.train.losses.task_loss`, in FP32
with TF32 and dropout off so that the two devices compute the same thing). Passes when every step's loss agrees
within ``--rtol`` and the final weights within ``--weights-atol``; a mixed-precision (AMP) step on the
device must give a finite loss. Prints one JSON line; exit 1 on a mismatch. ``--device cpu`` runs the
check against itself (the CPU dry run of ``bench/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _batch(n: int, size: int) -> tuple[Any, Any]:
    import numpy as np
    import torch

    from omsf2.data.synthetic import generate_phantom, stage_of

    images = np.stack([generate_phantom(7, i, "train", size).image for i in range(n)])
    x = torch.from_numpy(images.astype(np.float32))[:, None]
    x = (x - 0.5) / 0.25
    y = torch.tensor([stage_of(i) for i in range(n)])
    return x, y


def _steps(model: Any, x: Any, y: Any, steps: int, amp: bool = False) -> list[float]:
    import torch

    from omsf2.config import Task
    from omsf2.train.losses import task_loss

    # SGD, not AdamW: Adam's first steps move each weight by about lr * sign(grad), so a gradient near 0
    # whose sign differs between devices would move it 2 * lr apart; SGD's step is proportional to the gradient.
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    model.train()
    for _ in range(steps):
        ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
        with ctx:
            logits, _ = model(x)
            loss = task_loss(logits.float(), y, None, Task.MULTICLASS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def check(model_name: str, img_size: int, batch: int, steps: int, device: str) -> dict[str, Any]:
    """Run the check; the record's ``passed`` says whether the devices agreed."""
    import copy

    import torch

    from omsf2 import create_model

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    base = create_model(model_name, img_size=img_size, num_classes=4)
    for m in base.modules():  # the heads' dropout draws from each device's own generator: switch it off
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x, y = _batch(batch, img_size)
    t0 = time.perf_counter()
    cpu_model = copy.deepcopy(base)
    cpu = _steps(cpu_model, x, y, steps)
    t1 = time.perf_counter()
    dev_model = copy.deepcopy(base).to(device)
    dev = _steps(dev_model, x.to(device), y.to(device), steps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    diff = max(float((a.detach().cpu() - b.detach()).abs().max()) for a, b in
               zip(dev_model.parameters(), cpu_model.parameters(), strict=True))  # fmt: skip
    amp = _steps(copy.deepcopy(base).to(device), x.to(device), y.to(device), 1, amp=device.startswith("cuda"))
    return {
        "model": model_name, "img_size": img_size, "batch": batch, "steps": steps, "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "loss_cpu": cpu, "loss_device": dev, "max_param_abs_diff": diff, "amp_loss": amp[0],
        "cpu_s": round(t1 - t0, 2), "device_s": round(t2 - t1, 2),
    }  # fmt: skip


def main() -> None:
    """Command line: one JSON line, exit 1 when the devices disagree."""
    import math

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="omsf2_tiny")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rtol", type=float, default=2e-3, help="per-step loss agreement, relative")
    ap.add_argument("--weights-atol", type=float, default=1e-3, help="final weights agreement, absolute")
    a = ap.parse_args()
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no CUDA device")
    rec = check(a.model, a.img_size, a.batch, a.steps, a.device)
    worst = max(abs(c - d) / max(abs(c), 1e-8) for c, d in zip(rec["loss_cpu"], rec["loss_device"], strict=True))
    rec["worst_loss_rel_diff"] = worst
    rec["passed"] = worst <= a.rtol and rec["max_param_abs_diff"] <= a.weights_atol and math.isfinite(rec["amp_loss"])
    print(json.dumps(rec))
    sys.exit(0 if rec["passed"] else 1)


if __name__ == "__main__":
    main()
