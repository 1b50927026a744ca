"""Harness of the DICOM node tests: a real Orthanc, the node as a process, a pynetdicom scanner.

Orthanc (Debian's ``orthanc`` package; ``.ci/run`` installs it) is started as a plain process with
a generated configuration in a temporary folder: HTTP and DICOM ports chosen free on 127.0.0.1,
``RemoteAccessAllowed: false``, its own storage folder, and the node registered in
``DicomModalities``; with ``dicomweb=True`` it loads Debian's ``orthanc-dicomweb`` plugin, whose
STOW-RS endpoint is :attr:`Orthanc.stow_url`. Where Orthanc (or the plugin, or ``dciodvfy`` from
``dicom3tools``) is missing the tests fail under CI (``CI=true``) and skip elsewhere, saying how to
install it. ``bench/dicom_load.py`` loads this file for the same harness.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import venv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_peers() -> Any:
    """``peers.py`` beside this file (conftest modules are not importable under importlib mode; it is)."""
    spec = importlib.util.spec_from_file_location("omsf2_test_peers", Path(__file__).with_name("peers.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_peers = _load_peers()
StoreSink, EventLog, make_pki, free_port = _peers.StoreSink, _peers.EventLog, _peers.make_pki, _peers.free_port
NODE_AE = "OMSF2"
SCANNER_AE = "SCANNER"
ORTHANC_AE = "ORTHANC"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
PM_CLASS = "1.2.840.10008.5.1.4.1.1.30"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def require(msg: str) -> None:
    """Fail under CI (``CI=true``), skip elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def orthanc_binary() -> str:
    """The Orthanc executable, or fail (CI) / skip (elsewhere) saying how to get it."""
    exe = shutil.which("Orthanc") or (os.path.exists("/usr/sbin/Orthanc") and "/usr/sbin/Orthanc") or None
    if exe:
        return exe
    require("Orthanc is not installed (apt-get install -y orthanc dcmtk; .ci/run does it)")
    raise AssertionError("unreachable")


#: Debian's orthanc-dicomweb plugin (STOW-RS, QIDO-RS, WADO-RS).
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def dicomweb_plugin() -> Path:
    """The DICOMweb plugin, or fail (CI) / skip (elsewhere)."""
    if not DICOMWEB_PLUGIN.is_file():
        require("Orthanc's DICOMweb plugin is not installed (apt-get install -y orthanc-dicomweb; .ci/run does it)")
    return DICOMWEB_PLUGIN


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of ``dciodvfy`` (Debian's dicom3tools) on a file; fail (CI) / skip when it is missing."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        require("dciodvfy is not installed (apt-get install -y dicom3tools; .ci/run does it)")
    proc = subprocess.run([str(exe), str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning") and "needed to build DICOMDIR" not in line]
    return errors, warnings


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Orthanc:
    """An Orthanc process on free local ports, its storage in ``root``; the node registered as a modality.

    With ``tls`` (a dict of PEM paths ``cert``, ``key``, ``ca``) its DICOM port speaks TLS only
    (``DicomTlsEnabled``) and requires a client certificate that chains to ``ca``.
    """

    def __init__(self, root: Path, node_port: int, tls: dict[str, Path] | None = None, dicomweb: bool = False) -> None:
        self.root = root
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.node_port = node_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = root / "orthanc.json"
        root.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": "omsf2-test-pacs",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"omsf2": [NODE_AE, "127.0.0.1", node_port]},
            "Plugins": [str(dicomweb_plugin())] if dicomweb else [],
            "StorageCompression": False,
        }
        if dicomweb:
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
        if tls is not None:
            config.update(
                DicomTlsEnabled=True,
                DicomTlsCertificate=str(tls["cert"]),
                DicomTlsPrivateKey=str(tls["key"]),
                DicomTlsTrustedCertificates=str(tls["ca"]),
                DicomTlsRemoteCertificateRequired=True,
            )
        self.config.write_text(json.dumps(config, indent=2))

    @property
    def forward(self) -> str:
        return f"{ORTHANC_AE}@127.0.0.1:{self.dicom_port}"

    @property
    def stow_url(self) -> str:
        """The DICOMweb root (``--forward-stow``): STOW-RS is ``POST {stow_url}/studies``."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self) -> None:
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen([orthanc_binary(), str(self.config)], stdout=log, stderr=log)
        log.close()
        wait_for(self._up, 30, "Orthanc's REST API")

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {(self.root / 'orthanc.log').read_text()}")
        try:
            self.get("/system")
        except OSError:
            return False
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.dicom_port)) == 0

    def log_text(self) -> str:
        return (self.root / "orthanc.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def request(self, path: str, body: Any = None) -> bytes:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    def get(self, path: str, body: Any = None) -> Any:
        return json.loads(self.request(path, body))

    def instances(self, modality: str | None = None, sop_class: str | None = None) -> list[dict[str, Any]]:
        """Every instance: its Orthanc id, SOP Instance UID and class, study UID and series modality."""
        out = []
        for series in self.get("/series?expand"):
            mod = series["MainDicomTags"].get("Modality")
            if modality is not None and mod != modality:
                continue
            study = self.get(f"/studies/{series['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
            for iid in series["Instances"]:
                tags = self.get(f"/instances/{iid}")["MainDicomTags"]
                cls = self.request(f"/instances/{iid}/metadata/SopClassUid").decode()
                if sop_class is None or cls == sop_class:
                    out.append({"id": iid, "sop": tags["SOPInstanceUID"], "study": study, "modality": mod,
                                "sop_class": cls})  # fmt: skip
        return out

    def count(self, modality: str) -> int:
        series = self.get("/series?expand")
        return sum(len(s["Instances"]) for s in series if s["MainDicomTags"].get("Modality") == modality)

    def by_kind(self) -> dict[str, set[str]]:
        """SOP Instance UIDs per result kind (``sr``, ``pm``, ``sc``) and ``image`` for everything else."""
        kinds = {SR_CLASS: "sr", PM_CLASS: "pm", SC_CLASS: "sc"}
        out: dict[str, set[str]] = {"sr": set(), "pm": set(), "sc": set(), "image": set()}
        for i in self.instances():
            out[kinds.get(i["sop_class"], "image")].add(i["sop"])
        return out

    def file(self, orthanc_id: str, dest: Path) -> Path:
        dest.write_bytes(self.request(f"/instances/{orthanc_id}/file"))
        return dest


class Node:
    """``omsf2 serve dicom`` as a child process; its JSON-line events read from the log file."""

    def __init__(self, bundle: Path, spool: Path, forward: str | None, port: int, *extra: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "omsf2.cli.app",
            "serve",
            "dicom",
            "--model",
            str(bundle),
            *(["--forward", forward] if forward else []),
            "--port",
            str(port),
            "--ae-title",
            NODE_AE,
            "--spool",
            str(spool),
            "--threads",
            "1",
            *extra,
        ]
        self.port = port
        self.log = spool.parent / f"{spool.name}.events.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *override: str, once: tuple[str, ...] = ()) -> Node:
        """Start (again): ``override`` pairs ("--forward", "X") replace an option's value from now on (or add
        it); ``once`` are extra arguments of this start only (``--reanalyse``)."""
        args = self.args
        for i in range(0, len(override), 2):
            if override[i] in args:
                args[args.index(override[i]) + 1] = override[i + 1]
            else:
                args += [override[i], override[i + 1]]
        args = [*args, *once]
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log.with_suffix(".stderr"), "ab") as err:
            self.proc = subprocess.Popen([*args, "--log", str(self.log)], stderr=err, stdout=err, env=env)
        wait_for(lambda: self._alive() and self.events("listening", since_start=True), 60, "the node to listen")
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"node exited with {self.proc.returncode}: {self.log.with_suffix('.stderr').read_text()[-3000:]}"
            )
        return True

    def events(self, name: str | None = None, since_start: bool = False) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        with open(self.log, "rb") as f:
            if since_start:
                f.seek(self._offset)
            lines = f.read().decode().splitlines()
        out = [json.loads(line) for line in lines if line.strip()]
        return [e for e in out if name is None or e["event"] == name]

    def wait_events(self, name: str, n: int, timeout: float = 120) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            self._alive()
            got = self.events(name)
            return got if len(got) >= n else None

        return wait_for(enough, timeout, f"{n} '{name}' events")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None


# ---------------------------------------------------------------------------- DICOM images


def make_dx(
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    study: str | None = None,
    patient: str = "OMSF2TEST",
    sop_class: str = "1.2.840.10008.5.1.4.1.1.1.1",
    **elements: Any,
) -> Any:
    """A DX (or CR) dataset with patient, study and series, 8- or 16-bit, ready to C-STORE."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR" if sop_class == "1.2.840.10008.5.1.4.1.1.1" else "DX"
    ds.PatientName = "Test^Phantom"
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.BodyPartExamined = "CHEST"  # a PA chest: what the clinical gating lets through
    ds.ViewPosition = "PA"
    ds.set_pixel_data(arr, photometric, arr.dtype.itemsize * 8)
    for k, v in elements.items():
        setattr(ds, k, v)
    return ds


def phantom(h: int, w: int, seed: int, bits: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.3 * np.sin(xx / (4 + seed % 5)) * np.cos(yy / 6) + 0.05 * rng.standard_normal((h, w))
    return np.clip(np.rint(img * (2**bits - 1)), 0, 2**bits - 1).astype(np.uint16)


def dx16_pair(study: str | None = None) -> tuple[Any, Any]:
    """A 16-bit MONOCHROME2 DX with rescale and a window, and its MONOCHROME1 twin (same image once displayed)."""
    arr = phantom(150, 121, 3)
    window = {"RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 4000, "WindowWidth": 7000}
    mono2 = make_dx(arr, "MONOCHROME2", study=study, **window)
    mono1 = make_dx((4095 - arr).astype(np.uint16), "MONOCHROME1", study=mono2.StudyInstanceUID)
    mono1.RescaleSlope, mono1.RescaleIntercept = 2, -100
    mono1.WindowCenter, mono1.WindowWidth = 3990, 7000  # v1 = 7990 - v2 in modality units
    return mono2, mono1


def real_cr() -> Any:
    """pydicom-data's real adult PA CR (RG1_UNCR.dcm)."""
    import pydicom
    from pydicom.data import get_testdata_file

    return pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))


# ---------------------------------------------------------------------------- the scanner


def scanner_ae(ae_title: str = SCANNER_AE, extra_contexts: tuple[str, ...] = ()) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    for uid in ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.1.1", *extra_contexts):
        ae.add_requested_context(uid)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


@contextlib.contextmanager
def association(port: int, ae_title: str = SCANNER_AE, extra_contexts: tuple[str, ...] = ()) -> Iterator[Any]:
    assoc = scanner_ae(ae_title, extra_contexts).associate("127.0.0.1", port, ae_title=NODE_AE)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def send(port: int, datasets: list[Any], ae_title: str = SCANNER_AE) -> list[int]:
    """C-STORE each dataset over one association; the status codes (-1: no response)."""
    with association(port, ae_title) as assoc:
        if not assoc.is_established:
            raise ConnectionError(f"the node refused the association from {ae_title}")
        out = []
        for ds in datasets:
            st = assoc.send_c_store(ds)
            out.append(int(st.Status) if st else -1)
        return out


def load_images(n: int, size: int, folder: Path | None = None) -> tuple[list[Any], list[Path]]:
    """``n`` 16-bit DX images of about ``size`` px in 10 studies, and (with ``folder``) the same written as files."""
    from pydicom.uid import generate_uid

    studies = [generate_uid() for _ in range(10)]
    datasets = [make_dx(phantom(size + i % 7, size - 16 + i % 5, i), study=studies[i % 10]) for i in range(n)]
    files = []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, ds in enumerate(datasets):
            files.append(folder / f"IM{i:04d}")
            ds.save_as(files[-1], enforce_file_format=True)
    return datasets, files


def load_scenario(
    port: int, node: Node, n: int = 200, scus: int = 4, size: int = 96, datasets: list[Any] | None = None
) -> dict[str, Any]:
    """``scus`` scanners push ``n`` 16-bit DX images (about ``size`` px; or ``datasets``) concurrently; waits for
    every delivery."""
    datasets = datasets if datasets is not None else load_images(n, size)[0]
    n = len(datasets)
    per = [list(range(i, n, scus)) for i in range(scus)]
    errors: list[str] = []

    def push(idx: list[int]) -> None:
        try:
            st = send(port, [datasets[i] for i in idx])
            if any(s != 0 for s in st):
                errors.append(f"statuses {st}")
        except Exception as e:
            errors.append(repr(e))

    t0 = time.time()
    threads = [threading.Thread(target=push, args=(idx,)) for idx in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent_s = time.time() - t0
    forwarded = node.wait_events("forwarded", n, timeout=600)
    received = node.events("received")
    lat = np.array([e["receipt_to_delivery_s"] for e in forwarded])
    first = min(_ts(e) for e in received)
    last = max(_ts(e) for e in forwarded)
    return {
        "errors": errors,
        "uids": [str(d.SOPInstanceUID) for d in datasets],
        "images": n,
        "scus": scus,
        "image_size": [int(datasets[0].Rows), int(datasets[0].Columns)],
        "send_s": round(sent_s, 3),
        "wall_s": round(last - first, 3),
        "images_per_s": round(n / (last - first), 3),
        "receipt_to_delivery_p50_s": round(float(np.percentile(lat, 50)), 4),
        "receipt_to_delivery_p99_s": round(float(np.percentile(lat, 99)), 4),
        "receipt_to_delivery_max_s": round(float(lat.max()), 4),
        "batch_sizes": sorted({e["batch"] for e in node.events("predicted")}),
    }


def _ts(event: dict[str, Any]) -> float:
    import datetime as dt

    return dt.datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


# ---------------------------------------------------------------------------- omsf2 serve triton

TRITON_TOKEN = "omsf2-test-token"


def _venv_key() -> str:
    h = hashlib.sha256((REPO / "pyproject.toml").read_bytes())
    h.update(f"{REPO}|{sys.version}".encode())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def pytriton_bin() -> Path:
    """The ``bin`` folder of a venv with ``omsf2[triton-serve]`` installed (made once, then reused).

    PyTriton pins numpy < 2 and the rest of [dev] does not, so the server runs in its own venv
    (editable: the code under test is this checkout), kept in ``$OMSF2_TEST_CACHE`` (default
    ~/.cache/omsf2), keyed by pyproject.toml, this checkout and Python.
    """
    cache = Path(os.environ.get("OMSF2_TEST_CACHE", Path.home() / ".cache" / "omsf2"))
    env_dir = cache / "venvs" / f"pytriton-{_venv_key()}"
    done = env_dir / ".omsf2-installed"
    if done.is_file():
        return env_dir / "bin"
    shutil.rmtree(env_dir, ignore_errors=True)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    venv.create(env_dir, with_pip=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    install = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-e", f"{REPO}[triton-serve]"],
        capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"no package index reachable for nvidia-pytriton: {install.stderr.strip()[-200:]}")
    assert install.returncode == 0, install.stderr[-2000:]
    done.write_text("ok\n")
    return env_dir / "bin"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class TritonServer:
    """A running ``omsf2 serve triton`` (its own process group)."""

    def __init__(self, proc: subprocess.Popen[bytes], http: int, grpc: int, log: Path, bundle: Path) -> None:
        self.proc, self.http, self.grpc, self.log = proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log
        self.bundle = bundle

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


def start_triton(bin_dir: Path, bundle: Path, log: Path, *extra: str) -> TritonServer:
    """``omsf2 serve triton`` from the PyTriton venv on free ports, once both its models are ready."""
    import tritonclient.http as httpclient

    http, grpc, metrics = free_ports(3)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", OMSF2_TRITON_ACCESS_TOKEN=TRITON_TOKEN)
    cmd = [str(bin_dir / "omsf2"), "serve", "triton", "--model", str(bundle), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", "1", *extra]  # fmt: skip
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = TritonServer(proc, http, grpc, log, bundle)
    client = httpclient.InferenceServerClient(server.http)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"omsf2 serve triton exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if client.is_model_ready("omsf2") and client.is_model_ready("omsf2_logits"):
                return server
        except Exception:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"the server was not ready in 240 s:\n{log.read_text()[-3000:]}")
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- fixtures


def make_tiny_bundle(root: Path, img_size: int = 64, seed: int = 0, **bundle_options: Any) -> Path:
    """An untrained omsf2_tiny (64 px: the runtime tests' recipe), exported to ONNX and bundled.

    ``bundle_options`` go to :class:`~omsf2.runtime.bundle.BundleSpec` (e.g. ``max_batch``).
    """
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.models.checkpoint import save_checkpoint
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    torch.manual_seed(seed)
    model = create_model("omsf2_tiny", img_size=img_size, num_classes=len(STAGES)).eval()
    save_checkpoint(
        root / "tiny.pt",
        {
            "model_config": model.cfg.to_dict(),
            "classes": list(STAGES),
            "task": "multiclass",
            "preprocess": PreprocessSpec(size=(img_size, img_size)).to_dict(),
            "model": model.state_dict(),
        },
    )
    run_export(ExportSpec(str(root / "tiny.pt"), str(root / "export")))
    out = root / bundle_options.pop("out", "bundle")
    spec = {"name": "tiny", "version": "1.0.0", "data_source": "random weights", **bundle_options}
    make_bundle(BundleSpec(str(root / "export"), str(out), **spec))
    return out


def make_nan_bundle(root: Path) -> Path:
    """:func:`make_tiny_bundle` whose model emits NaN logits (an ``Add`` of NaN after the classifier).

    The export folder's report is re-hashed before bundling, so the bundle verifies: only the
    runtime's output check can refuse it.
    """
    import hashlib
    import json

    import onnx
    from onnx import helper, numpy_helper

    from omsf2.runtime.bundle import BundleSpec, make_bundle

    make_tiny_bundle(root)
    path = root / "export" / "model.onnx"
    model = onnx.load(str(path))
    producer = next(n for n in model.graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_before_nan"
    model.graph.initializer.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan_constant"))
    model.graph.node.append(helper.make_node("Add", ["logits_before_nan", "nan_constant"], ["logits"]))
    onnx.save(model, str(path))
    report = json.loads((root / "export" / "report.json").read_text())
    report["artifacts"]["onnx"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "export" / "report.json").write_text(json.dumps(report))
    make_bundle(BundleSpec(str(root / "export"), str(root / "nan-bundle"), name="nan", version="1.0.0"))
    return root / "nan-bundle"


@pytest.fixture(scope="session")
def nan_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified bundle whose model emits NaN logits (:func:`make_nan_bundle`)."""
    return make_nan_bundle(tmp_path_factory.mktemp("nan-model"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """:func:`make_tiny_bundle` in a fresh temporary folder named ``name``."""
    return lambda name, **options: make_tiny_bundle(tmp_path_factory.mktemp(name), **options)


@pytest.fixture(scope="session")
def dicom_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("dicom-model"))


@pytest.fixture()
def pacs(tmp_path: Path) -> Iterator[tuple[Orthanc, int]]:
    """A running Orthanc with the node (at the yielded port) registered as modality ``omsf2``."""
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", node_port)
    orthanc.start()
    try:
        yield orthanc, node_port
    finally:
        orthanc.stop()


@pytest.fixture()
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """``make(name, dicomweb=False)``: a started Orthanc in ``tmp_path / name`` (stopped after the test)."""
    started: list[Orthanc] = []

    def make(name: str, dicomweb: bool = False) -> Orthanc:
        orthanc = Orthanc(tmp_path / f"orthanc-{name}", free_port(), dicomweb=dicomweb)
        started.append(orthanc)
        orthanc.start()
        return orthanc

    yield make
    for orthanc in started:
        orthanc.stop()


@pytest.fixture()
def node_factory(tmp_path: Path, dicom_bundle: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(forward: str | None, port: int, *extra: str, spool: str = "spool", bundle: Path | None = None) -> Node:
        node = Node(bundle or dicom_bundle, tmp_path / spool, forward, port, *extra)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.kill()


# ---------------------------------------------------------------------------- an in-process PACS, TLS


@pytest.fixture()
def sink() -> Iterator[StoreSink]:
    """A :class:`StoreSink`, not yet started (call ``start()``)."""
    s = StoreSink()
    yield s
    s.stop()


@pytest.fixture()
def node_events() -> Iterator[EventLog]:
    """The events of in-process nodes during the test."""
    handler = EventLog()
    logger = logging.getLogger("omsf2.serve.dicom.events")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """:func:`make_pki` in a temporary folder, made once."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture()
def tls_pacs(tmp_path: Path, pki: dict[str, Any]) -> Iterator[tuple[Orthanc, int]]:
    """A running Orthanc whose DICOM port speaks TLS only (client certificates from ``pki``'s CA required)."""
    node_port = free_port()
    tls = {"cert": pki["orthanc"]["cert"], "key": pki["orthanc"]["key"], "ca": pki["ca"]}
    orthanc = Orthanc(tmp_path / "orthanc-tls", node_port, tls=tls)
    orthanc.start()
    try:
        yield orthanc, node_port
    finally:
        orthanc.stop()


@pytest.fixture(scope="session")
def kit() -> Any:
    """The harness's helpers, for the tests (conftest modules are not importable under importlib mode)."""
    import types

    return types.SimpleNamespace(
        association=association,
        send=send,
        make_dx=make_dx,
        phantom=phantom,
        dx16_pair=dx16_pair,
        real_cr=real_cr,
        free_port=free_port,
        wait_for=wait_for,
        load_scenario=load_scenario,
        load_images=load_images,
        scanner_ae=scanner_ae,
        dciodvfy=dciodvfy,
        free_ports=free_ports,
        start_triton=start_triton,
    )
