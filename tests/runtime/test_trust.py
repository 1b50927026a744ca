"""A manifest held to its model, signed bundles and pinned digests: Python, the CLI and the C ABI agree.

Each case runs on a real bundle (an untrained omsf2_tiny exported at 64 px). Acceptance 0 of issue 22:
reversed classes, a changed mean and a model file swapped for another model's (its hash updated)
are refused in one line without any trust configured. Acceptance 1: a signed bundle loads; a
manifest rewritten to match a changed model file, a wrong key and another digest are refused under
a trust policy, before any model file is read.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.runtime.bundle import BundleError, BundleSpec, load_bundle, load_export, make_bundle
from omsf2.runtime.model_check import ModelMismatch, check_model, onnx_model_info
from omsf2.runtime.predictor import Predictor
from omsf2.runtime.trust import TrustError, TrustPolicy, generate_keypair, load_public_key

runner = CliRunner()


def _export(root: Path, seed: int) -> Path:
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = create_model("omsf2_tiny", img_size=64, num_classes=len(STAGES)).eval()
    payload = {
        "model_config": model.cfg.to_dict(),
        "classes": list(STAGES),
        "task": "multiclass",
        "preprocess": PreprocessSpec(size=(64, 64)).to_dict(),
        "model": model.state_dict(),
    }
    save_checkpoint(root / f"tiny{seed}.pt", payload)
    run_export(ExportSpec(str(root / f"tiny{seed}.pt"), str(root / "export")))
    return root / "export"


@pytest.fixture(scope="module")
def other_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model (other weights, so another checkpoint sha256) with the same classes and preprocessing."""
    return _export(tmp_path_factory.mktemp("other"), seed=1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    signer_key, signer_pub = generate_keypair(root / "signer")
    _, other_pub = generate_keypair(root / "other")
    return {"key": signer_key, "pub": signer_pub, "other_pub": other_pub}


@pytest.fixture()
def signed_bundle(tiny_export: Path, keys: dict[str, Path], tmp_path: Path) -> Path:
    return make_bundle(BundleSpec(str(tiny_export), str(tmp_path / "signed"), name="tiny", sign=str(keys["key"]))).root


def _edit_manifest(bundle: Path, change) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    change(m)
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))


def _swap_model(bundle: Path, other_export: Path) -> None:
    """model.onnx replaced by another model's, and the manifest's hash updated to match it."""
    shutil.copy(other_export / "model.onnx", bundle / "model.onnx")
    digest = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    _edit_manifest(bundle, lambda m: m["files"].__setitem__("model.onnx", digest))


TAMPERING = {
    "reversed classes": (
        lambda b, o: _edit_manifest(b, lambda m: m.__setitem__("classes", m["classes"][::-1])),
        "manifest.json's classes differ from omsf2.classes in 'model.onnx'",
    ),
    "changed mean": (
        lambda b, o: _edit_manifest(b, lambda m: m["preprocess"].__setitem__("mean", [0.6])),
        "manifest.json's preprocess mean differs from omsf2.preprocess in 'model.onnx'",
    ),
    "another model's file": (
        _swap_model,
        "manifest.json's checkpoint sha256 differs from omsf2.checkpoint_sha256 in 'model.onnx': it is another "
        "model's file",
    ),
}


# ---------------------------------------------------------------------------- acceptance 0


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_manifest_that_disagrees_with_its_model_is_refused_in_one_line(
    case: str, tiny_bundle: Path, other_export: Path, images, tmp_path: Path
) -> None:
    tamper, message = TAMPERING[case]
    tamper(tiny_bundle, other_export)
    with pytest.raises(BundleError) as e:
        load_bundle(tiny_bundle)
    assert str(e.value) == f"bundle '{tiny_bundle}': {message}"
    with pytest.raises(BundleError, match="differ"):
        Predictor.from_bundle(tiny_bundle, backend="ort")
    res = runner.invoke(app, ["predict", str(images[0]), "--model", str(tiny_bundle)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [f"error: bundle '{tiny_bundle}': {message}"]


def test_an_export_folder_is_held_to_its_report_too(tiny_export: Path, tmp_path: Path) -> None:
    export = Path(shutil.copytree(tiny_export, tmp_path / "export"))
    report = json.loads((export / "report.json").read_text())
    report["task"] = "multilabel"
    (export / "report.json").write_text(json.dumps(report))
    with pytest.raises(BundleError, match=r"report.json's task differs from omsf2.task in 'model.onnx'"):
        load_export(export)


def _graph(logits_classes: int, image_shape: list) -> bytes:
    """A minimal ONNX with the omsf2 metadata of the tiny bundle and the given I/O shapes."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, image_shape)
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", logits_classes])
    heat = helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["batch", 1, 8, 8])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], keepdims=0, axes=[2, 3]),
        helper.make_node("Identity", ["m"], ["logits"]),
        helper.make_node("Identity", ["image"], ["heatmap"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [image], [logits, heat]))
    meta = {
        "omsf2.classes": json.dumps(["normal", "stage_I", "stage_II", "stage_III"]),
        "omsf2.preprocess": json.dumps({"size": [64, 64], "channels": 1}),
    }
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


FIELDS = {
    "classes": ["normal", "stage_I", "stage_II", "stage_III"],
    "task": "multiclass",
    "preprocess": {"size": [64, 64]},
}


@pytest.mark.parametrize(
    ("classes", "image", "message"),
    [
        (3, ["batch", 1, 64, 64], r"'m.onnx' returns logits \[\?, 3\]; manifest.json has 4 classes \(\[N, 4\]\)"),
        (4, ["batch", 1, 96, 96], r"'m.onnx' takes image \[\?, 1, 96, 96\]; manifest.json's preprocess needs"),
        (4, ["batch", 64, 64], r"'m.onnx' does not take a float32 image of shape \[N, C, H, W\] \(\[\?, 64, 64\]\)"),
    ],
)
def test_a_model_whose_shapes_do_not_fit_is_one_line(classes: int, image: list, message: str) -> None:
    info = onnx_model_info(_graph(classes, image))
    with pytest.raises(ModelMismatch, match=message):
        check_model(FIELDS, info, "m.onnx")
    check_model(FIELDS, onnx_model_info(_graph(4, ["batch", 1, 64, 64])), "m.onnx")


def test_the_protobuf_reader_sees_what_the_onnx_package_sees(tiny_export: Path) -> None:
    import onnx

    data = (tiny_export / "model.onnx").read_bytes()
    proto = onnx.load_from_string(data)
    info = onnx_model_info(data)
    assert info.metadata == {p.key: p.value for p in proto.metadata_props}
    for t in [*proto.graph.input, *proto.graph.output]:
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.type.tensor_type.shape.dim)
        assert info.tensors[t.name].dims == dims and info.tensors[t.name].elem_type == t.type.tensor_type.elem_type
    for bad in (data[: len(data) // 3], b"\x0a\xff\xff\xff\xff\x0f", b"not onnx at all"):
        with pytest.raises(ValueError):
            onnx_model_info(bad)


# ---------------------------------------------------------------------------- acceptance 1


def test_a_signed_bundle_loads_under_its_key_and_its_digest(signed_bundle: Path, keys, images) -> None:
    assert (signed_bundle / "manifest.sig").is_file()
    digest = hashlib.sha256((signed_bundle / "manifest.json").read_bytes()).hexdigest()
    policy = TrustPolicy.from_options([str(keys["other_pub"]), str(keys["pub"])], digest)
    b = load_bundle(signed_bundle, policy)
    assert b.signer == hashlib.sha256(load_public_key(keys["pub"])).hexdigest() and b.digest == digest
    pred = Predictor.from_bundle(signed_bundle, backend="ort", threads=1, trust=policy)
    assert pred.predict(images[:1])[0].label in b.classes
    res = runner.invoke(
        app, ["predict", str(images[0]), "--model", str(signed_bundle), "--trust", str(keys["pub"]),
              "--expect-sha256", digest],
    )  # fmt: skip
    assert res.exit_code == 0, res.output


def _rewrite_to_match_a_changed_model(bundle: Path) -> None:
    """What a tamperer who can write the folder does: change a file and its hash in the manifest."""
    (bundle / "README.md").write_text("changed\n")
    digest = hashlib.sha256((bundle / "README.md").read_bytes()).hexdigest()
    _edit_manifest(bundle, lambda m: m["files"].__setitem__("README.md", digest))


def test_trust_refusals_are_one_line_before_any_model_file_is_read(signed_bundle: Path, keys, tiny_bundle) -> None:
    pub, other = str(keys["pub"]), str(keys["other_pub"])
    digest = hashlib.sha256((signed_bundle / "manifest.json").read_bytes()).hexdigest()
    (signed_bundle / "model.onnx").unlink()  # any read of a model file would fail differently
    cases = [
        (TrustPolicy.from_options([other]), r"is signed by key [0-9a-f]{16}\.\.\., which is not a --trust key"),
        (TrustPolicy.from_options(None, "0" * 64), r"manifest sha256 [0-9a-f]{16}\.\.\. is not the pinned"),
    ]
    for policy, message in cases:
        with pytest.raises(BundleError, match=message):
            load_bundle(signed_bundle, policy)
    with pytest.raises(BundleError, match=r"'model.onnx' is listed in manifest.json but missing"):
        load_bundle(signed_bundle, TrustPolicy.from_options([pub], digest))  # trusted: now the files are read
    _rewrite_to_match_a_changed_model(tiny_bundle)
    load_bundle(tiny_bundle)  # without trust the rewritten manifest passes: hashes catch corruption only
    with pytest.raises(BundleError, match=r"is not signed \(no manifest.sig\) and --trust requires a signature"):
        load_bundle(tiny_bundle, TrustPolicy.from_options([pub]))


def test_a_manifest_rewritten_after_signing_is_refused(signed_bundle: Path, keys, images) -> None:
    _rewrite_to_match_a_changed_model(signed_bundle)
    load_bundle(signed_bundle)  # the hashes agree with the rewritten manifest
    with pytest.raises(BundleError, match=r"the signature does not verify against manifest.json"):
        load_bundle(signed_bundle, TrustPolicy.from_options([str(keys["pub"])]))
    res = runner.invoke(app, ["predict", str(images[0]), "--model", str(signed_bundle), "--trust", str(keys["pub"])])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "the signature does not verify" in res.output


def test_export_folders_and_checkpoints_are_refused_under_trust(tiny_export: Path, keys, images) -> None:
    with pytest.raises(BundleError, match=r"is an export folder, which is not signed"):
        load_export(tiny_export, TrustPolicy.from_options([str(keys["pub"])]))
    ckpt = next(tiny_export.parent.glob("*.pt"))
    res = runner.invoke(app, ["predict", str(images[0]), "--model", str(ckpt), "--expect-sha256", "0" * 64])
    assert res.exit_code == 1 and "need a signed bundle folder" in res.output


def test_bad_trust_options_are_one_line(tiny_bundle: Path, keys, images, tmp_path: Path) -> None:
    for args, message in [
        (["--trust", str(tmp_path / "missing.pub")], "No such file"),
        (["--trust", str(keys["key"])], "is not a PEM public key"),
        (["--expect-sha256", "abc"], "--expect-sha256 must be 64 hex digits"),
    ]:
        res = runner.invoke(app, ["predict", str(images[0]), "--model", str(tiny_bundle), *args])
        assert res.exit_code == 1 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    with pytest.raises(TrustError):
        TrustPolicy(keys=(b"short",))


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask gives the private key 0600
    try:
        res = runner.invoke(app, ["keygen", "--out", str(tmp_path / "site")])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE((tmp_path / "site.key").stat().st_mode) == 0o600
    assert (tmp_path / "site.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "key id " in res.output
    res = runner.invoke(app, ["keygen", "--out", str(tmp_path / "site")])
    assert res.exit_code == 1 and "exists; keygen never overwrites a key" in res.output


#: The algorithm's identity `omsf2 bundle` requires.
ID = ("--name", "tiny", "--version", "1.0.0")


def test_bundle_sign_on_the_command_line(tiny_export: Path, keys, tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = runner.invoke(app, ["bundle", str(tiny_export), "--out", str(out), *ID, "--sign", str(keys["key"])])
    assert res.exit_code == 0, res.output
    assert "signed by key" in res.output
    load_bundle(out, TrustPolicy.from_options([str(keys["pub"])]))
    pub = str(keys["pub"])
    res = runner.invoke(app, ["bundle", str(tiny_export), "--out", str(tmp_path / "c"), *ID, "--sign", pub])
    assert res.exit_code == 1 and "is not an unencrypted PEM private key" in res.output
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.*"))


# ---------------------------------------------------------------------------- smaller defects


def test_a_bundle_honours_the_umask(tiny_export: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        b = make_bundle(BundleSpec(str(tiny_export), str(tmp_path / "b"))).root
    finally:
        os.umask(old)
    assert stat.S_IMODE(b.stat().st_mode) == 0o755  # mkdtemp's 0700 would lock a service account out
    assert {stat.S_IMODE(p.stat().st_mode) for p in b.iterdir()} == {0o644}


def test_bundle_out_under_a_file_names_the_file(tiny_export: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["bundle", str(tiny_export), "--out", str(tmp_path / "file" / "sub"), *ID])
    assert res.exit_code == 1 and f"'{tmp_path / 'file'}' is a file, not a folder" in res.output


def test_predict_with_an_image_as_the_model_says_so(images, tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", str(images[0]), "--model", str(images[1])])
    assert res.exit_code == 1 and "is an image, not a model" in res.output and "exporting" not in res.output
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    res = runner.invoke(app, ["predict", str(images[0]), "--model", str(text)])
    assert res.exit_code == 1 and "is not a checkpoint (torch saves a zip archive)" in res.output


def test_info_works_without_torch() -> None:
    import subprocess
    import sys

    block = (
        "import importlib.abc, sys\n"
        "class _NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
        "from omsf2.cli.app import main\nsys.argv = ['omsf2', 'info']\nmain()\n"
    )
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "not installed (a [runtime] install" in proc.stdout and "onnxruntime" in proc.stdout


def test_inference_errors_of_any_backend_type_become_one_inference_error(tiny_bundle_master: Path) -> None:
    from omsf2.runtime.errors import InferenceError

    pred = Predictor.from_bundle(tiny_bundle_master, backend="ort", threads=1)

    class Failing:
        name, max_batch = "ort", 32

        def run(self, batch):
            from onnxruntime.capi.onnxruntime_pybind11_state import Fail

            raise Fail("[ONNXRuntimeError] : 1 : FAIL : boom\nsecond line")

    pred.session = Failing()
    with pytest.raises(
        InferenceError, match=r"^backend ort failed on a batch of 2: \[ONNXRuntimeError\] .* second line$"
    ):
        pred.run_batch(np.zeros((2, 1, 64, 64), np.float32))


# ---------------------------------------------------------------------------- the C ABI


class Trust(ctypes.Structure):
    _fields_ = [
        ("expect_sha256", ctypes.c_char_p),
        ("public_key_files", ctypes.POINTER(ctypes.c_char_p)),
        ("num_public_keys", ctypes.c_size_t),
    ]


def _c_create(lib: ctypes.CDLL, bundle: Path, digest: str | None = None, keys: tuple[Path, ...] = ()):
    """(status, last error, digest, signer) of omsf2_runtime_create_trusted on ``bundle``."""
    files = (ctypes.c_char_p * max(1, len(keys)))(*[str(k).encode() for k in keys])
    trust = Trust(None if digest is None else digest.encode(), files if keys else None, len(keys))
    rt = ctypes.c_void_p()
    st = lib.omsf2_runtime_create_trusted(str(bundle).encode(), None, ctypes.byref(trust), ctypes.byref(rt))
    msg = lib.omsf2_last_error().decode()
    ids = (lib.omsf2_runtime_digest(rt).decode(), lib.omsf2_runtime_signer(rt).decode()) if st == 0 else ("", "")
    lib.omsf2_runtime_destroy(rt)
    return st, msg, *ids


@pytest.fixture(scope="module")
def lib(cpp_lib: ctypes.CDLL) -> ctypes.CDLL:
    """The C library of the session, built with OpenSSL where libssl-dev is installed (.ci/run installs it)."""
    cpp_lib.omsf2_runtime_create_trusted.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return cpp_lib


def _need_signatures(lib: ctypes.CDLL) -> None:
    if not lib.omsf2_has_signatures():
        msg = "the C library was built without OpenSSL (apt-get install libssl-dev)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.mark.parametrize("case", list(TAMPERING))
def test_the_c_abi_refuses_what_python_refuses_word_for_word(case: str, lib, tiny_bundle: Path, other_export) -> None:
    assert _c_create(lib, tiny_bundle)[0] == 0
    tamper, message = TAMPERING[case]
    tamper(tiny_bundle, other_export)
    st, msg, _, _ = _c_create(lib, tiny_bundle)
    assert (st, msg) == (2, f"bundle '{tiny_bundle}': {message}")


def test_the_c_abi_reads_shapes_as_python_does(lib, tiny_bundle: Path) -> None:
    (tiny_bundle / "model.onnx").write_bytes(_graph(3, ["batch", 1, 64, 64]))
    digest = hashlib.sha256((tiny_bundle / "model.onnx").read_bytes()).hexdigest()
    _edit_manifest(tiny_bundle, lambda m: m["files"].__setitem__("model.onnx", digest))
    with pytest.raises(BundleError) as e:
        load_bundle(tiny_bundle)
    assert _c_create(lib, tiny_bundle)[:2] == (2, str(e.value))
    assert "returns logits [?, 3]; manifest.json has 4 classes" in str(e.value)


def test_the_c_abi_checks_digests_and_signatures(lib, signed_bundle: Path, tiny_bundle: Path, keys) -> None:
    _need_signatures(lib)
    digest = hashlib.sha256((signed_bundle / "manifest.json").read_bytes()).hexdigest()
    signer = load_bundle(signed_bundle).signer
    assert _c_create(lib, signed_bundle, digest, (keys["other_pub"], keys["pub"])) == (0, "", digest, signer)
    st, msg, _, _ = _c_create(lib, signed_bundle, "0" * 64)
    assert st == 2 and "is not the pinned expect_sha256" in msg
    st, msg, _, _ = _c_create(lib, signed_bundle, None, (keys["other_pub"],))
    assert st == 2 and "which is not a trusted key" in msg
    st, msg, _, _ = _c_create(lib, tiny_bundle, None, (keys["pub"],))
    assert st == 2 and "is not signed (no manifest.sig)" in msg
    st, msg, _, _ = _c_create(lib, signed_bundle, None, (keys["key"],))
    assert st == 1 and "is not an Ed25519 public key" in msg
    _rewrite_to_match_a_changed_model(signed_bundle)
    assert _c_create(lib, signed_bundle)[0] == 0  # the hashes agree with the rewritten manifest
    st, msg, _, _ = _c_create(lib, signed_bundle, None, (keys["pub"],))
    assert st == 2 and "the signature does not verify against manifest.json" in msg
    (signed_bundle / "model.onnx").unlink()
    st, msg, _, _ = _c_create(lib, signed_bundle, None, (keys["pub"],))
    assert "signature does not verify" in msg  # refused before any model file is read


def test_a_library_without_openssl_pins_digests_and_refuses_keys(
    signed_bundle: Path, keys, tmp_path: Path, cpp_lib_builder
) -> None:
    nossl = cpp_lib_builder(tmp_path / "libnossl.so", openssl=False, opt="-O0")
    nossl.omsf2_runtime_create_trusted.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    assert nossl.omsf2_has_signatures() == 0
    digest = hashlib.sha256((signed_bundle / "manifest.json").read_bytes()).hexdigest()
    assert _c_create(nossl, signed_bundle, digest)[0] == 0
    st, msg, _, _ = _c_create(nossl, signed_bundle, None, (keys["pub"],))
    assert st == 4 and "built without OpenSSL, so it cannot check signatures" in msg
