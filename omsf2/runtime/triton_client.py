"""The ``triton`` backend: a session whose model runs on an ``omsf2 serve triton`` server.

Many nodes (or ``omsf2 predict`` runs) share one inference fleet: each decodes and preprocesses its
images itself, sends the float32 batch to the server's ``<model>_logits`` model, and gets back the
logits and heat maps that model computed, which :meth:`omsf2.runtime.predictor.Predictor.run_batch`
then checks and activates exactly as for a local session. The server checks them too (non-finite
outputs fail the request there), so neither side trusts the other's numbers blindly.

The bundle must be the one the server runs. The server reports the sha256 of its bundle's manifest
in every response (output ``bundle_sha256``), and this session refuses a server whose digest differs
from the local bundle's: once when it opens (one probe batch, so a wrong server is one line before
any image is read), and on every batch after (a server restarted with another bundle behind the
same address is caught on the next call, not trusted). It also holds the server's input shape to the
bundle's preprocessing and its class count to the bundle's classes.

tritonclient (``pip install 'tritonclient[grpc]'``) is imported when a session opens; torch never.
``HOST:PORT`` (or ``grpc://HOST:PORT``) talks gRPC, ``http://HOST:PORT`` HTTP. One client per
calling thread: the session is safe to call from several threads.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

#: Names of the tensor model ``omsf2 serve triton`` binds beside its bytes model.
LOGITS_SUFFIX = "_logits"
INPUT = "image"
OUTPUTS = ("logits", "heatmap", "bundle_sha256")
DEFAULT_MODEL = "omsf2"


class TritonMismatch(ValueError):
    """The server runs another bundle (or a model of another shape) than the local one."""


def parse_url(url: str) -> tuple[str, str]:
    """(``grpc`` or ``http``, ``HOST:PORT``) of ``--triton-url``.

    Raises:
        ValueError: not ``HOST:PORT``, ``grpc://HOST:PORT`` or ``http://HOST:PORT``.
    """
    text = (url or "").strip()
    protocol = "grpc"
    for prefix in ("grpc://", "http://"):
        if text.startswith(prefix):
            protocol, text = prefix[:-3], text[len(prefix) :]
    host, _, port = text.rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or "/" in host:
        raise ValueError(f"--triton-url must be HOST:PORT (gRPC) or http://HOST:PORT, got {url!r}")
    return protocol, f"{host}:{port}"


class TritonSession:
    """A :class:`~omsf2.runtime.sessions.Session` on a remote ``omsf2 serve triton`` model.

    Args:
        url: ``HOST:PORT`` (gRPC), ``grpc://HOST:PORT`` or ``http://HOST:PORT``.
        digest: the local bundle's sha256 (the server must report the same).
        input_chw: the bundle's model input (C, H, W).
        num_classes: the bundle's class count.
        max_batch: the most images per call (capped by the server's ``max_batch_size``).
        model: the server's model name (``omsf2 serve triton --model-name``; the tensor model is
            ``<model>_logits``).
        timeout: seconds one call may take.

    Raises:
        BackendUnavailable: tritonclient is not installed.
        ValueError: the server cannot be reached, has no such model, or serves another bundle
            (:class:`TritonMismatch`); one line each.
    """

    name = "triton"

    def __init__(
        self,
        url: str,
        digest: str,
        input_chw: tuple[int, int, int],
        num_classes: int,
        max_batch: int,
        *,
        model: str = DEFAULT_MODEL,
        timeout: float = 60.0,
    ) -> None:
        self.protocol, self.address = parse_url(url)
        self.url, self.digest, self.input_chw = url, digest, tuple(input_chw)
        self.num_classes, self.model, self.timeout = num_classes, model + LOGITS_SUFFIX, timeout
        self._module = self._import()
        self._local = threading.local()
        self.max_batch = max(1, min(max_batch, self._server_max_batch()))
        try:  # the probe: the server's digest, its shapes, a model that runs
            self.run(np.zeros((1, *self.input_chw), np.float32))
        except TritonMismatch:
            raise
        except Exception as e:  # tritonclient's InferenceServerException: a wrong input shape, a broken model
            raise ValueError(f"{self._where()} failed a probe batch: {' '.join(str(e).split())[:300]}") from None

    def _import(self) -> Any:
        from omsf2.runtime.sessions import BackendUnavailable

        try:
            if self.protocol == "http":
                import tritonclient.http as module
            else:
                import tritonclient.grpc as module
        except ImportError as e:
            raise BackendUnavailable(
                f"the triton backend needs tritonclient (pip install 'tritonclient[{self.protocol}]'): {e}"
            ) from None
        return module

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._module.InferenceServerClient(self.address)
            self._local.client = client
        return client

    def _where(self) -> str:
        return f"the Triton server at {self.url}"

    def _server_max_batch(self) -> int:
        """The served model's ``max_batch_size``; checks that it is live and holds the tensor model."""
        client = self._client()
        try:
            if not client.is_model_ready(self.model):
                raise ValueError(
                    f"{self._where()} has no ready model '{self.model}' (start it with omsf2 serve triton --model "
                    "BUNDLE; --triton-model names another)"
                )
            config = client.get_model_config(self.model)
        except ValueError:
            raise
        except Exception as e:  # InferenceServerException, a refused connection
            raise ValueError(f"cannot reach {self._where()}: {' '.join(str(e).split())[:300]}") from None
        if isinstance(config, dict):  # HTTP answers JSON; gRPC a protobuf
            size = int(config.get("max_batch_size", 0) or 0)
        else:
            size = int(config.config.max_batch_size)
        return size or 1

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, K), heat maps (N, h, w)) from the server, its bundle digest checked.

        Raises:
            TritonMismatch: the server reports another bundle or another class count.
            Exception: tritonclient's own errors (the Predictor makes them one InferenceError).
        """
        m = self._module
        x = np.ascontiguousarray(batch, dtype=np.float32)
        inp = m.InferInput(INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outputs = [m.InferRequestedOutput(name) for name in OUTPUTS]
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        result = self._client().infer(self.model, [inp], outputs=outputs, **kwargs)
        served = {bytes(d).decode(errors="replace") for d in np.asarray(result.as_numpy("bundle_sha256")).reshape(-1)}
        if served != {self.digest}:
            raise TritonMismatch(
                f"{self._where()} serves bundle {', '.join(sorted(served))[:64]}, not this bundle {self.digest}: "
                "start omsf2 serve triton with the same bundle (or point --triton-url at the server that has it)"
            )
        logits = np.asarray(result.as_numpy("logits"), dtype=np.float32)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise TritonMismatch(
                f"{self._where()} returned logits of shape {logits.shape}; this bundle has {self.num_classes} classes"
            )
        return logits, np.asarray(result.as_numpy("heatmap"), dtype=np.float32)
