"""Checkpoints load without unpickling arbitrary objects and refuse what they cannot use."""

from __future__ import annotations

import collections

import pytest
import torch

from omsf2 import create_model
from omsf2.config import PreprocessSpec
from omsf2.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


def _payload(model) -> dict:
    return {
        "model_config": model.cfg.to_dict(),
        "classes": ["a", "b", "c", "d"],
        "task": "multiclass",
        "preprocess": PreprocessSpec(size=(64, 64)).to_dict(),
        "model": model.state_dict(),
    }


def test_round_trip(tmp_path) -> None:
    m = create_model("omsf2_tiny", img_size=64).eval()
    save_checkpoint(tmp_path / "c.pt", _payload(m))
    back = model_from_checkpoint(load_checkpoint(tmp_path / "c.pt"))
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(back(x)[0], m(x)[0])


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_objects_are_never_unpickled(tmp_path, capsys) -> None:
    m = create_model("omsf2_tiny", img_size=64)
    p = {**_payload(m), "extra": Evil()}
    torch.save({"format": "omsf2-checkpoint", "format_version": 1, **p}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a valid omsf2/torch checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "msg"),
    [
        (b"hello", "not a valid omsf2/torch checkpoint"),
        (None, "is not an omsf2 checkpoint"),
    ],
)
def test_bad_files(tmp_path, content, msg) -> None:
    path = tmp_path / "c.pt"
    if content is None:
        torch.save(collections.OrderedDict(w=torch.zeros(1)), path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=msg):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_truncated_checkpoint(tmp_path) -> None:
    m = create_model("omsf2_tiny", img_size=64)
    save_checkpoint(tmp_path / "c.pt", _payload(m))
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        load_checkpoint(tmp_path / "t.pt")


def test_newer_format_and_mismatched_weights(tmp_path) -> None:
    m = create_model("omsf2_tiny", img_size=64)
    torch.save({"format": "omsf2-checkpoint", "format_version": 99, **_payload(m)}, tmp_path / "n.pt")
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(tmp_path / "n.pt")
    p = _payload(m)
    p["model_config"] = create_model("omsf2_tiny", num_classes=3).cfg.to_dict()
    save_checkpoint(tmp_path / "w.pt", p)
    with pytest.raises(ValueError, match=r"weights do not fit model 'omsf2_tiny': .*shape mismatch"):
        model_from_checkpoint(load_checkpoint(tmp_path / "w.pt"))
