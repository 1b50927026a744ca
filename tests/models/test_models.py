"""The OMSF2 network, its registry and its parts."""

from __future__ import annotations

import pytest
import torch

from omsf2 import create_model, list_models
from omsf2.config import ModelConfig
from omsf2.models import OMSF2, register_model
from omsf2.models.backbone import ResNetBackbone
from omsf2.models.checkpoint import load_init_weights


def test_registry_lists_variants_and_rejects_unknown_and_duplicates() -> None:
    assert {"omsf2_tiny", "omsf2_r18", "omsf2_r50"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'nope'; choose one of"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("omsf2_tiny", colour=3)
    with pytest.raises(ValueError, match="already registered"):

        @register_model
        def omsf2_tiny() -> ModelConfig:  # pragma: no cover - never called
            return ModelConfig(name="x")


def test_tiny_is_about_two_million_parameters() -> None:
    m = create_model("omsf2_tiny")
    n = sum(p.numel() for p in m.parameters())
    assert 1.5e6 < n < 2.5e6
    assert m.cfg.img_size == 224


@pytest.mark.parametrize("bap", [True, False])
@pytest.mark.parametrize("size", [64, 96])
def test_forward_shapes(bap: bool, size: int) -> None:
    m = create_model("omsf2_tiny", num_classes=3, bap=bap, img_size=64).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        logits, heat = m(x)
    assert logits.shape == (2, 3)
    assert heat.shape == (2, 1, size // 4, size // 4)
    assert float(heat.min()) >= 0 and float(heat.max()) <= 1
    with torch.no_grad():
        out = m.forward_train(x)
    assert out.attention.shape[0] == 2 and (out.attention >= 0).all()
    assert out.attention.shape[1] == (m.cfg.bap_maps if bap else 4)
    assert out.features.shape == (2, m.head.num_features)
    torch.testing.assert_close(out.logits, logits)


def test_three_channel_and_bottleneck_variants() -> None:
    m = OMSF2(ModelConfig(name="t", depth=50, width=0.125, in_chans=3, neck_channels=16, head_channels=16, img_size=64))
    logits, heat = m.eval()(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 4) and heat.shape == (1, 1, 16, 16)


def test_backbone_uses_torchvision_names_and_strides() -> None:
    bb = ResNetBackbone(18, in_chans=3, width=1.0)
    keys = set(bb.state_dict())
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer4.1.bn2.weight",
        "layer2.0.downsample.0.weight",
    } <= keys
    feats = bb(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert bb.channels == (64, 128, 256, 512)


def test_init_from_torchvision_style_state_dict(tmp_path) -> None:
    # A torchvision-layout ResNet-18 (3-channel stem, fc) loads into a 1-channel backbone.
    src = ResNetBackbone(18, in_chans=3, width=0.375)
    state = dict(src.state_dict())
    state["fc.weight"] = torch.zeros(1000, 192)
    path = tmp_path / "resnet.pth"
    torch.save(state, path)
    m = create_model("omsf2_tiny")
    counts = load_init_weights(m, path)
    assert counts["loaded"] == len(src.state_dict())
    torch.testing.assert_close(m.backbone.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(m.backbone.layer3[0].conv1.weight, src.layer3[0].conv1.weight)


def test_init_from_other_model_fails_clearly(tmp_path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(ResNetBackbone(50, width=0.25).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit model 'omsf2_tiny'"):
        load_init_weights(create_model("omsf2_tiny"), path)
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot load init weights"):
        load_init_weights(create_model("omsf2_tiny"), bad)


def test_model_config_validates() -> None:
    with pytest.raises(ValueError, match="depth"):
        ModelConfig(name="x", depth=20)
    with pytest.raises(ValueError, match="multiple of 32"):
        ModelConfig(name="x", img_size=100)
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(name="x", pool_windows=(4,))
    cfg = ModelConfig(name="x", pool_windows=(3, 5))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_same_logits_on_every_device(device: str) -> None:
    torch.manual_seed(0)
    m = create_model("omsf2_tiny", img_size=64).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ref = m(x)[0]
        out = m.to(device)(x.to(device))[0].cpu()
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)


def test_registry_and_network_do_not_import_each_other() -> None:
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[2] / "omsf2" / "models"

    def imports(name: str) -> set[str]:
        out = set()
        for n in ast.walk(ast.parse((pkg / name).read_text())):
            if isinstance(n, ast.ImportFrom) and n.module:
                out.add(n.module)
            elif isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
        return out

    # The network registers itself with the registry (timm's direction); the registry imports no network.
    assert not [i for i in imports("registry.py") if i.startswith("omsf2.models")]
    assert "omsf2.models.registry" in imports("omsf2.py")


def test_builders_are_timm_style_and_features_feed_the_head() -> None:
    from omsf2.models.omsf2 import omsf2_tiny

    m = omsf2_tiny(num_classes=3, img_size=64).eval()
    assert isinstance(m, OMSF2) and m.cfg.name == "omsf2_tiny" and m.cfg.num_classes == 3
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a = m.forward_head(m.forward_features(x))
        logits, heat = m(x)
    torch.testing.assert_close(a.logits, logits)
    torch.testing.assert_close(a.heatmap, heat)
