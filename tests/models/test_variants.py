"""Baseline and ablation variants: they build, forward, order by size, train, export and evaluate like omsf2_tiny."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from omsf2.config import HeadName, ModelConfig, NeckName
from omsf2.models import create_model, list_models
from omsf2.models.omsf2 import activation_map

ABLATIONS = ("omsf2_tiny_no_neck", "omsf2_tiny_no_msff", "resnet18_plain_tiny")
PLAIN = ("resnet18_plain_tiny", "resnet18_plain", "resnet50_plain")


def _params(name: str, **kw: object) -> int:
    return sum(p.numel() for p in create_model(name, **kw).parameters())


def test_variants_are_registered_with_descriptions() -> None:
    from omsf2.models import model_description

    for name in (*ABLATIONS, *PLAIN):
        assert name in list_models()
        assert model_description(name)


@pytest.mark.parametrize("name", ABLATIONS)
@pytest.mark.parametrize("size", [64, 128])
def test_variant_forward_shapes_and_heatmap_range(name: str, size: int) -> None:
    torch.manual_seed(0)
    m = create_model(name, img_size=size).eval()
    with torch.no_grad():
        logits, heat = m(torch.randn(2, 1, size, size))
        out = m.forward_train(torch.randn(2, 1, size, size))
    assert logits.shape == (2, 4) and heat.shape == (2, 1, size // 4, size // 4)
    assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    assert out.features.shape == (2, m.head.num_features)
    # Attention maps for the augmentation exist only where CAM maps or the BAP branch do.
    has_att = m.cfg.neck is NeckName.SSP or m.cfg.bap
    assert (out.attention is not None) is has_att


def test_plain_resnets_are_gap_and_linear_on_c5_without_neck_or_bap() -> None:
    for name in PLAIN:
        m = create_model(name)
        assert m.neck is None and m.bap is None and m.cfg.head is HeadName.GAP
        assert m.head.num_features == m.backbone.channels[3]
        assert [n for n, _ in m.named_children()] == ["backbone", "head"]


def test_parameter_counts_are_ordered() -> None:
    plain, no_neck = _params("resnet18_plain_tiny"), _params("omsf2_tiny_no_neck")
    no_msff, full = _params("omsf2_tiny_no_msff"), _params("omsf2_tiny")
    assert plain < no_neck < full and plain < no_msff < full
    assert _params("omsf2_tiny", bap=False) < full
    # The plain baseline is exactly the backbone plus a linear classifier.
    bb = sum(p.numel() for p in create_model("omsf2_tiny").backbone.parameters())
    c5 = create_model("omsf2_tiny").backbone.channels[3]
    assert plain == bb + c5 * 4 + 4
    assert _params("resnet18_plain") < _params("omsf2_r18") and _params("resnet50_plain") < _params("omsf2_r50")


def test_no_neck_without_gap_is_refused() -> None:
    with pytest.raises(ValueError, match="without a neck use head 'gap'"):
        ModelConfig(name="x", neck=NeckName.NONE)
    with pytest.raises(ValueError, match="neck"):
        ModelConfig(name="x", neck="fpn")  # type: ignore[arg-type]


def test_config_round_trip_and_old_configs_default_to_the_full_model() -> None:
    cfg = create_model("omsf2_tiny_no_neck").cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["neck"] == "lateral"
    old = {k: v for k, v in create_model("omsf2_tiny").cfg.to_dict().items() if k not in ("neck", "head")}
    assert ModelConfig.from_dict(old).neck is NeckName.SSP


def test_activation_map_is_scaled_per_image() -> None:
    x = torch.zeros(2, 3, 4, 4)
    x[0, :, 1, 2] = 5.0
    a = activation_map(x)
    assert a.shape == (2, 1, 4, 4) and float(a[0, 0, 1, 2]) == pytest.approx(1.0) and float(a[0].min()) == 0.0
    assert float(a[1].abs().max()) == 0.0  # a constant map stays 0, no division by zero


@pytest.mark.parametrize("name", ABLATIONS)
def test_variant_trains_exports_and_evaluates(name: str, small_cfg, tmp_path: Path) -> None:
    from omsf2.evaluate import EvalSpec, evaluate_checkpoint
    from omsf2.export.onnx import OnnxExportSpec, export_onnx, ort_session, run_session
    from omsf2.models.checkpoint import load_checkpoint, model_from_checkpoint
    from omsf2.train import train

    # Attention-guided views on every step and the soft distance: a variant without maps trains without them.
    cfg = dataclasses.replace(
        small_cfg, model=name, epochs=1, aug=dataclasses.replace(small_cfg.aug, attention_prob=1.0)
    )
    res = train(cfg, tmp_path / "run")
    assert res.best_epoch == 1 and np.isfinite(res.history[0]["train_loss"])
    best = tmp_path / "run" / "best.pt"
    assert load_checkpoint(best)["model_config"]["name"] == name
    exp = export_onnx(OnnxExportSpec(str(best), str(tmp_path / "m.onnx")))
    assert exp.parity["top1_agreement"] == 1.0 and exp.parity["max_abs_err"] < 1e-3
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64)).astype(np.float32)
    logits, heat = run_session(ort_session(exp.path), x)
    with torch.no_grad():
        ref_logits, ref_heat = model_from_checkpoint(load_checkpoint(best))(torch.from_numpy(x))
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(heat, ref_heat.numpy(), atol=1e-4)
    ev = evaluate_checkpoint(EvalSpec(str(best), device="cpu", workers=0))
    assert ev.metrics["accuracy"] == pytest.approx(res.best["accuracy"])
