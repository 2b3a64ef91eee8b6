"""TLS and mutual TLS through the real server, with certificates generated in the test.

gRPC (both implementations) is driven by tritonclient.grpc with `ssl=True`, HTTPS by
tritonclient.http with `ssl=True` and an `ssl_context_factory`. Under mutual TLS a client with
no certificate, or with one signed by another CA, is refused; a plaintext client on a TLS port
fails at once and the server keeps serving.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent.ssl
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import running_server
from tests.tls_certs import TlsFiles, make_certificates
from trident.runtime.server import ServerStartError

from .grpc_support import GRPC_IMPLEMENTATIONS

DATA = np.arange(16, dtype=np.float32) - 3.5
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _grpc_tls(certs: TlsFiles, mutual: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "grpc_use_ssl": True,
        "grpc_server_cert": str(certs.server_cert),
        "grpc_server_key": str(certs.server_key),
        "allow_http": False,
        "allow_metrics": False,
    }
    if mutual:
        settings.update(grpc_use_ssl_mutual=True, grpc_root_cert=str(certs.ca_cert))
    return settings


def _http_tls(certs: TlsFiles, mutual: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "http_use_ssl": True,
        "http_server_cert": str(certs.server_cert),
        "http_server_key": str(certs.server_key),
        "allow_grpc": False,
        "allow_metrics": False,
    }
    if mutual:
        settings.update(http_use_ssl_mutual=True, http_root_cert=str(certs.ca_cert))
    return settings


def grpc_infer(url: str, **client_options: Any) -> None:
    """One inference with tritonclient.grpc; raises InferenceServerException on failure."""
    client = grpcclient.InferenceServerClient(url, **client_options)
    try:
        tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
        tensor.set_data_from_numpy(DATA)
        result = client.infer("ident", [tensor], client_timeout=20)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), DATA)
    finally:
        client.close()


def http_context_factory(
    certs: TlsFiles, cert: Path | None = None, key: Path | None = None
) -> Callable[..., gevent.ssl.SSLContext]:
    """An ssl_context_factory for tritonclient.http: trusts the test CA, presents `cert`."""

    def make(*args: Any, **kwargs: Any) -> gevent.ssl.SSLContext:
        context = gevent.ssl.create_default_context(cafile=str(certs.ca_cert))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key))
        return context

    return make


def http_infer(url: str, **client_options: Any) -> None:
    """One inference with tritonclient.http; raises on failure."""
    client = httpclient.InferenceServerClient(
        url, connection_timeout=10, network_timeout=20, **client_options
    )
    try:
        tensor = httpclient.InferInput("INPUT0", [16], "FP32")
        tensor.set_data_from_numpy(DATA, binary_data=True)
        result = client.infer("ident", [tensor])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), DATA)
    finally:
        client.close()


def plaintext_bytes_get_closed(url: str, payload: bytes) -> bytes:
    """Send plaintext `payload` to a TLS port; return what came back before the server closed
    the connection (the caller checks it is no protocol answer). Fails if it never closes."""
    host, port = url.rsplit(":", 1)
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
    return received


def negotiated_alpn(url: str, ca_cert: Path, offer: list[str]) -> str | None:
    """The application protocol the server picks from `offer` in a TLS handshake."""
    host, port = url.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.set_alpn_protocols(offer)
    raw = socket.create_connection((host, int(port)), timeout=10)
    with context.wrap_socket(raw, server_hostname=host) as tls:
        return tls.selected_alpn_protocol()


@pytest.fixture
def grpc_tls_server(
    ident_repository: Path, certs: TlsFiles, request: pytest.FixtureRequest
) -> Iterator[str]:
    implementation, mutual = request.param
    with running_server(
        ident_repository, grpc_implementation=implementation, **_grpc_tls(certs, mutual)
    ) as srv:
        yield srv.grpc_url


@pytest.mark.parametrize(
    "grpc_tls_server", [(impl, False) for impl in GRPC_IMPLEMENTATIONS], indirect=True
)
def test_grpc_inference_over_tls_and_plaintext_clients_fail_cleanly(
    grpc_tls_server: str, certs: TlsFiles
) -> None:
    url = grpc_tls_server
    assert negotiated_alpn(url, certs.ca_cert, ["http/1.1", "h2"]) == "h2"
    grpc_infer(url, ssl=True, root_certificates=str(certs.ca_cert))
    # A plaintext gRPC client cannot talk to the TLS port...
    with pytest.raises(InferenceServerException):
        grpc_infer(url)
    # ...nor can raw HTTP/2 bytes: the server closes the connection without answering in h2.
    assert b"HTTP" not in plaintext_bytes_get_closed(url, HTTP2_PREFACE + b"\x00" * 64)
    # A client that does not trust the server's CA refuses the server.
    with pytest.raises(InferenceServerException):
        grpc_infer(url, ssl=True, root_certificates=str(certs.wrong_ca_cert))
    # The server goes on serving TLS clients.
    grpc_infer(url, ssl=True, root_certificates=str(certs.ca_cert))


@pytest.mark.parametrize(
    "grpc_tls_server", [(impl, True) for impl in GRPC_IMPLEMENTATIONS], indirect=True
)
def test_grpc_mutual_tls_refuses_clients_without_a_certificate_from_its_ca(
    grpc_tls_server: str, certs: TlsFiles
) -> None:
    url = grpc_tls_server
    good = {
        "ssl": True,
        "root_certificates": str(certs.ca_cert),
        "private_key": str(certs.client_key),
        "certificate_chain": str(certs.client_cert),
    }
    grpc_infer(url, **good)
    with pytest.raises(InferenceServerException):
        grpc_infer(url, ssl=True, root_certificates=str(certs.ca_cert))
    with pytest.raises(InferenceServerException):
        grpc_infer(
            url,
            ssl=True,
            root_certificates=str(certs.ca_cert),
            private_key=str(certs.wrong_client_key),
            certificate_chain=str(certs.wrong_client_cert),
        )
    with pytest.raises(InferenceServerException):
        grpc_infer(url)
    grpc_infer(url, **good)


def test_https_inference_and_plaintext_clients_fail_cleanly(
    ident_repository: Path, certs: TlsFiles
) -> None:
    with running_server(ident_repository, **_http_tls(certs, mutual=False)) as srv:
        url = srv.http_url
        http_infer(url, ssl=True, ssl_context_factory=http_context_factory(certs))
        with pytest.raises(Exception):  # noqa: B017 - the client's error type varies
            http_infer(url)
        reply = plaintext_bytes_get_closed(url, b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert not reply.startswith(b"HTTP/1.1 200")
        http_infer(url, ssl=True, ssl_context_factory=http_context_factory(certs))


def test_https_mutual_tls_refuses_clients_without_a_certificate_from_its_ca(
    ident_repository: Path, certs: TlsFiles
) -> None:
    with running_server(ident_repository, **_http_tls(certs, mutual=True)) as srv:
        url = srv.http_url
        good = http_context_factory(certs, certs.client_cert, certs.client_key)
        http_infer(url, ssl=True, ssl_context_factory=good)
        with pytest.raises(Exception):  # noqa: B017
            http_infer(url, ssl=True, ssl_context_factory=http_context_factory(certs))
        wrong = http_context_factory(certs, certs.wrong_client_cert, certs.wrong_client_key)
        with pytest.raises(Exception):  # noqa: B017
            http_infer(url, ssl=True, ssl_context_factory=wrong)
        http_infer(url, ssl=True, ssl_context_factory=good)


def _bad_tls_settings(certs: TlsFiles) -> dict[str, tuple[dict[str, Any], str]]:
    """Settings that cannot work, and the start error each must give."""
    cert, key, ca = str(certs.server_cert), str(certs.server_key), str(certs.ca_cert)
    return {
        "no cert": ({"grpc_use_ssl": True}, "--grpc-use-ssl needs --grpc-server-cert"),
        "missing cert file": (
            {"grpc_use_ssl": True, "grpc_server_cert": "/nonexistent.pem", "grpc_server_key": key},
            "--grpc-server-cert /nonexistent.pem: cannot read it",
        ),
        "key of another cert": (
            {
                "grpc_use_ssl": True,
                "grpc_server_cert": cert,
                "grpc_server_key": str(certs.client_key),
            },
            "not a PEM certificate and its matching key",
        ),
        "mutual without root cert": (
            {"grpc_use_ssl_mutual": True, "grpc_server_cert": cert, "grpc_server_key": key},
            "--grpc-use-ssl-mutual needs --grpc-root-cert",
        ),
        "https mutual without root cert": (
            {"http_use_ssl_mutual": True, "http_server_cert": cert, "http_server_key": key},
            "--http-use-ssl-mutual needs --http-root-cert",
        ),
        "https missing root file": (
            {
                "http_use_ssl_mutual": True,
                "http_server_cert": cert,
                "http_server_key": key,
                "http_root_cert": ca + ".missing",
            },
            "--http-root-cert",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no cert",
        "missing cert file",
        "key of another cert",
        "mutual without root cert",
        "https mutual without root cert",
        "https missing root file",
    ],
)
def test_bad_tls_flags_stop_the_start_with_a_clear_error(
    ident_repository: Path, certs: TlsFiles, case: str
) -> None:
    settings, message = _bad_tls_settings(certs)[case]
    with (
        pytest.raises(ServerStartError, match=re.escape(message)),
        running_server(ident_repository, **settings),
    ):
        pass
