"""Quantization-aware fine-tuning: fake quantization matching the export's S8S8 (TensorRT) contract.

``omsf2 export --int8`` writes ``model.int8.onnx`` with symmetric int8 per-output-channel weights
and symmetric int8 per-tensor activations (zero point 0) at every Conv/Gemm input
(:mod:`omsf2.export.quantize`). :func:`prepare` makes a model in training see the same rounding:

- **weights** of every ``Conv2d``/``Linear`` go through ``torch.fake_quantize_per_channel_affine``
  (range [-127, 127], scale = per-output-channel abs-max / 127, recomputed from the current weight
  at each forward, as a per-channel min/max observer does), applied with
  ``torch.nn.utils.parametrize``; torch's op is a straight-through estimator, so the latent float
  weights keep training;
- **input activations** of those modules, and **both inputs of every residual Add** (ResNet
  blocks, the neck's DPPM: the Adds the export quantizes), go through
  ``torch.fake_quantize_per_tensor_affine`` in forward (pre-)hooks, with the scale of a
  ``MovingAverageMinMaxObserver`` (symmetric, [-127, 127]). A moving-average abs-max rather than a
  percentile: the export calibrates with the 99.999th percentile of |x| (it drops only the top
  0.001 % of values, so it sits close to the maximum), and a moving average of per-batch maxima
  is the cheap, stable estimate of that same tail, less spiky than the running maximum (an exact
  percentile would need a histogram over the whole run). The observers update only in training mode, and freeze after
  ``QatConfig.observe_fraction`` of the run's steps (common practice: the last steps then
  fine-tune against fixed ranges, as the export will use).

BatchNorm is left as it is: the export folds it into the convolution, multiplying each output
channel's weights by one factor; symmetric per-output-channel quantization commutes with that
(the channel's abs-max scales by the same factor), so quantizing the unfolded weight here rounds
exactly as the folded one will. Not modelled: the neck's int8 MaxPool/Resize/Concat (they move
int8 values with their input's scale, which the next Conv's input quantization already rounds to).

The modules and their names are unchanged; while prepared, a weight's state-dict key reads
``<module>.parametrizations.weight.original``, and :func:`float_state_dict` maps it back, so
checkpoints hold plain float weights (the latent, trained ones). :func:`strip` restores plain modules.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import MovingAverageMinMaxObserver
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

QMAX = 127  # symmetric int8: [-127, 127], zero point 0 (the export's S8S8 flavour)
_PARAM_KEY = re.compile(r"(^|\.)parametrizations\.(\w+)\.original$")
_QUANTIZED = (nn.Conv2d, nn.Linear)


@dataclasses.dataclass(frozen=True)
class QatConfig:
    """Fake-quantization settings; the one place their defaults live.

    Attributes:
        observe_fraction: share of the run's steps during which the activation ranges are
            observed; after it they freeze. In [0, 1]; 0 = freeze after the first step.
        averaging: the observers' moving-average constant, in (0, 1].
    """

    observe_fraction: float = 0.5
    averaging: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.observe_fraction <= 1.0:
            raise ValueError(f"QAT observe fraction must lie in [0, 1], got {self.observe_fraction}")
        if not 0.0 < self.averaging <= 1.0:
            raise ValueError(f"QAT observer averaging constant must lie in (0, 1], got {self.averaging}")


class WeightFakeQuant(nn.Module):
    """Parametrization: per-output-channel symmetric int8 fake quantization of a weight.

    Holds no state: the scale comes from the weight itself (abs-max of each output channel / 127).
    """

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``w``.

        Args:
            w: ``(C_out, ...)`` weight (Conv2d: ``(C_out, C_in/groups, kH, kW)``; Linear: ``(C_out, C_in)``).

        Returns:
            A tensor of ``w``'s shape whose channel ``c`` takes values ``k * scale[c]``, ``|k| <= 127``;
            gradients pass straight through.
        """
        amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
        scale = (amax / QMAX).clamp_min(torch.finfo(torch.float32).tiny)
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        out = torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -QMAX, QMAX)
        return out.to(w.dtype)


class ActFakeQuant:
    """Per-tensor symmetric int8 fake quantization of a module's input (pre-hook) or output (hook).

    One instance may hook the same module in several copies of a model (the trained model and its
    weight average): only a module in training mode updates the observer; all use its scale.

    Args:
        averaging: the observer's moving-average constant.
        device: where the observer's statistics live (the model's device).
    """

    def __init__(self, averaging: float, device: torch.device) -> None:
        self.observer = MovingAverageMinMaxObserver(
            averaging_constant=averaging,
            dtype=torch.qint8,
            qscheme=torch.per_tensor_symmetric,
            quant_min=-QMAX,
            quant_max=QMAX,
        ).to(device)
        self.frozen = False

    @property
    def ready(self) -> bool:
        """Whether a range has been observed."""
        return bool(torch.isfinite(self.observer.min_val).item())

    def scale(self) -> float:
        """The current step size (range abs-max / 127)."""
        return float(self.observer.calculate_qparams()[0])

    def quantize(self, x: torch.Tensor, observe: bool) -> torch.Tensor:
        """Observe ``x`` (when asked and not frozen) and fake-quantize it; any shape, float."""
        if observe and not self.frozen:
            self.observer(x.detach().float())
        if not self.ready:  # an evaluation before any training step: nothing to round to yet
            return x
        return torch.fake_quantize_per_tensor_affine(x.float(), self.scale(), 0, -QMAX, QMAX).to(x.dtype)

    def pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Forward pre-hook: the module's first input, observed only while the module trains."""
        return (self.quantize(args[0], module.training), *args[1:])

    def hook(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """Forward hook: the module's output, observed only while the module trains."""
        return self.quantize(output, module.training)


@dataclasses.dataclass
class QatHandle:
    """What :func:`prepare` installed, for :func:`observe_until`, :func:`state` and :func:`strip`.

    Attributes:
        cfg: the settings.
        acts: fake-quantizer per quantized tensor (``<module>`` for a Conv2d/Linear input,
            ``<block>:add.branch`` / ``<block>:add.shortcut`` for a residual Add's inputs), shared
            by the model and its shadows.
        models: the prepared models (the trained one first).
        hooks: the registered forward hooks and pre-hooks.
    """

    cfg: QatConfig
    acts: dict[str, ActFakeQuant]
    models: list[nn.Module]
    hooks: list[RemovableHandle]


def quantized_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs that get fake quantization: every Conv2d and Linear."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QUANTIZED)]


def residual_adds(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module, nn.Module | None]]:
    """Each residual Add as ``(block name, block, branch-output module, shortcut module or None)``.

    The Add sums the branch module's output and the shortcut module's output (the projection), or
    the block's own input when the shortcut is None (identity).
    """
    from omsf2.models.backbone import BasicBlock, Bottleneck
    from omsf2.models.neck import DPPM

    out: list[tuple[str, nn.Module, nn.Module, nn.Module | None]] = []
    for name, m in model.named_modules():
        if isinstance(m, BasicBlock):
            out.append((name, m, m.bn2, m.downsample))
        elif isinstance(m, Bottleneck):
            out.append((name, m, m.bn3, m.downsample))
        elif isinstance(m, DPPM):
            out.append((name, m, m.proj, None))
    return out


def _hook_adds(m: nn.Module, acts: dict[str, ActFakeQuant], hooks: list[RemovableHandle]) -> None:
    for name, block, branch, shortcut in residual_adds(m):
        hooks.append(branch.register_forward_hook(acts[f"{name}:add.branch"].hook))
        if shortcut is not None:
            hooks.append(shortcut.register_forward_hook(acts[f"{name}:add.shortcut"].hook))
        else:  # the block's input: it also feeds the block's first convolution(s)
            hooks.append(block.register_forward_pre_hook(acts[f"{name}:add.shortcut"].pre_hook))


def prepare(model: nn.Module, cfg: QatConfig | None = None, shadows: Iterable[nn.Module] = ()) -> QatHandle:
    """Install fake quantization on ``model`` (in place) and on copies of it that share its ranges.

    Args:
        model: the model to fine-tune; its Conv2d/Linear weights and inputs get fake quantization.
        cfg: settings (default :class:`QatConfig`).
        shadows: models of the same structure (e.g. the weight average) that are evaluated with
            the same fake quantization and ranges but never update them.

    Returns:
        The handle to pass to :func:`observe_until`, :func:`state` and :func:`strip`.

    Raises:
        ValueError: ``model`` has no Conv2d/Linear, or a shadow's structure differs.
    """
    cfg = cfg or QatConfig()
    mods = quantized_modules(model)
    if not mods:
        raise ValueError("quantization-aware training needs a model with Conv2d or Linear layers")
    dev = next(model.parameters()).device
    names = [n for n, _ in mods] + [f"{b}:add.{k}" for b, *_ in residual_adds(model) for k in ("branch", "shortcut")]
    acts = {name: ActFakeQuant(cfg.averaging, dev) for name in names}
    handle = QatHandle(cfg, acts, [], [])
    for m in (model, *shadows):
        these = dict(quantized_modules(m))
        if [n for n, _ in mods] != list(these) or len(residual_adds(m)) != len(residual_adds(model)):
            raise ValueError("a shadow model's layers differ from the model's")
        for name, mod in these.items():
            parametrize.register_parametrization(mod, "weight", WeightFakeQuant())
            handle.hooks.append(mod.register_forward_pre_hook(acts[name].pre_hook))
        _hook_adds(m, acts, handle.hooks)
        handle.models.append(m)
    return handle


def observe_until(handle: QatHandle, step: int, total_steps: int) -> None:
    """Freeze the activation ranges once ``step`` (steps done) reaches the observed share of ``total_steps``."""
    if step >= max(1, round(handle.cfg.observe_fraction * total_steps)):
        for a in handle.acts.values():
            a.frozen = True


def state(handle: QatHandle) -> dict[str, Any]:
    """The observers' statistics and whether they froze (what an exact resume needs)."""
    return {
        name: {"min": a.observer.min_val.cpu(), "max": a.observer.max_val.cpu(), "frozen": a.frozen}
        for name, a in handle.acts.items()
    }


def load_state(handle: QatHandle, saved: dict[str, Any]) -> None:
    """Restore what :func:`state` returned.

    Raises:
        ValueError: the saved observers are for other modules.
    """
    if saved.keys() != handle.acts.keys():
        raise ValueError("the checkpoint's QAT observers do not match this model's quantized layers and Adds")
    for name, a in handle.acts.items():
        dev = a.observer.min_val.device
        a.observer.min_val.copy_(saved[name]["min"].to(dev))
        a.observer.max_val.copy_(saved[name]["max"].to(dev))
        a.frozen = bool(saved[name]["frozen"])


def strip(handle: QatHandle) -> None:
    """Remove the fake quantization: plain modules again, holding the latent (trained) float weights."""
    for h in handle.hooks:
        h.remove()
    handle.hooks.clear()
    for m in handle.models:
        for _, mod in quantized_modules(m):
            if parametrize.is_parametrized(mod, "weight"):
                parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
                params = dict(mod._parameters)  # the weight came back last: put it first again
                mod._parameters.clear()
                mod._parameters.update({"weight": params.pop("weight"), **params})
    handle.models.clear()


def float_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict under its plain keys and order, parametrized or not (detached copies).

    Args:
        model: any module; ``<m>.parametrizations.<p>.original`` becomes ``<m>.<p>``, placed before
            the module's other entries (its bias), where a plain module lists it.
    """
    sd = model.state_dict()
    pending: dict[str, list[str]] = {}  # module prefix -> its parametrized keys, not yet placed
    for k in sd:
        if _PARAM_KEY.search(k):
            pending.setdefault(_PARAM_KEY.sub("", k), []).append(k)
    out: dict[str, torch.Tensor] = {}

    def put(key: str) -> None:
        out[_PARAM_KEY.sub(r"\1\2", key)] = sd[key].detach().clone().contiguous()

    for k in sd:
        if not _PARAM_KEY.search(k):
            for src in pending.pop(k.rsplit(".", 1)[0] if "." in k else "", []):
                put(src)  # before the module's own first entry
            put(k)
        elif _PARAM_KEY.sub(r"\1\2", k) not in out:  # a module with no other entry
            put(k)
    return out


def prepare_run(model: nn.Module, average: nn.Module | None, saved: dict[str, Any] | None) -> QatHandle:
    """What a training run installs: fake quantization on its model and on its weight average.

    Args:
        model: the trained model (its observers update).
        average: the weight average, evaluated and saved with the same ranges (None: none kept).
        saved: the observers' :func:`state` from the checkpoint being resumed (None: a new run).
    """
    handle = prepare(model, QatConfig(), () if average is None else (average,))
    if saved is not None:
        load_state(handle, saved)
    return handle
