"""TLS for the frontends: which files, checked once at start, and the contexts built from them.

gRPC takes tritonserver's flags (`--grpc-use-ssl`, `--grpc-use-ssl-mutual`, `--grpc-server-cert`,
`--grpc-server-key`, `--grpc-root-cert`); HTTPS takes the same names with `http` (tritonserver
has no HTTPS of its own). As in tritonserver, asking for mutual TLS turns TLS on.

The native gRPC server and the HTTP server get an `ssl.SSLContext` (with ALPN `h2` for gRPC);
grpc.aio gets `grpc.ssl_server_credentials` from the same files. Every file is read and the key
checked against the certificate when the server starts, so a wrong path or a key that does not
match stops the start with a message naming the flag, instead of failing each handshake later.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from trident.runtime.errors import InvalidArgumentError
from trident.runtime.settings import ServerSettings


class TlsSettingsError(InvalidArgumentError):
    """TLS flags that cannot work (a missing file, a key that does not match, no root cert)."""


@dataclass(frozen=True)
class TlsConfig:
    """The PEM files of one frontend's TLS, read and checked."""

    #: "grpc" or "http": the flags' prefix, for messages.
    protocol: str
    server_cert: Path
    server_key: Path
    #: The CA that signs client certificates; required (and only used) for mutual TLS.
    root_cert: Path | None
    mutual: bool

    @classmethod
    def from_flags(
        cls,
        protocol: str,
        *,
        use_ssl: bool,
        mutual: bool,
        server_cert: str,
        server_key: str,
        root_cert: str,
    ) -> TlsConfig | None:
        """The TLS of one frontend; None when it serves plaintext. Raises TlsSettingsError."""
        if not (use_ssl or mutual):
            return None
        flag = f"--{protocol}"
        if not server_cert or not server_key:
            raise TlsSettingsError(
                f"{flag}-use-ssl needs {flag}-server-cert and {flag}-server-key (PEM files)"
            )
        if mutual and not root_cert:
            raise TlsSettingsError(
                f"{flag}-use-ssl-mutual needs {flag}-root-cert: the CA (PEM) that signs the "
                "client certificates to accept"
            )
        config = cls(
            protocol,
            _readable(server_cert, f"{flag}-server-cert"),
            _readable(server_key, f"{flag}-server-key"),
            _readable(root_cert, f"{flag}-root-cert") if root_cert else None,
            mutual,
        )
        config.ssl_context()  # load every file once: bad PEM or a mismatched key fail here
        return config

    @classmethod
    def for_grpc(cls, settings: ServerSettings) -> TlsConfig | None:
        return cls.from_flags(
            "grpc",
            use_ssl=settings.grpc_use_ssl,
            mutual=settings.grpc_use_ssl_mutual,
            server_cert=settings.grpc_server_cert,
            server_key=settings.grpc_server_key,
            root_cert=settings.grpc_root_cert,
        )

    @classmethod
    def for_http(cls, settings: ServerSettings) -> TlsConfig | None:
        return cls.from_flags(
            "http",
            use_ssl=settings.http_use_ssl,
            mutual=settings.http_use_ssl_mutual,
            server_cert=settings.http_server_cert,
            server_key=settings.http_server_key,
            root_cert=settings.http_root_cert,
        )

    def ssl_context(self, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A server-side context: TLS 1.2 or later, the client certificate required under
        mutual TLS, `alpn` offered (("h2",) for gRPC, which HTTP/2 over TLS requires)."""
        flag = f"--{self.protocol}"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.server_cert, self.server_key)
        except ssl.SSLError as exc:
            raise TlsSettingsError(
                f"{flag}-server-cert {self.server_cert} and {flag}-server-key "
                f"{self.server_key}: not a PEM certificate and its matching key ({exc.reason})"
            ) from None
        if self.mutual:
            assert self.root_cert is not None
            try:
                context.load_verify_locations(cafile=str(self.root_cert))
            except ssl.SSLError as exc:
                raise TlsSettingsError(
                    f"{flag}-root-cert {self.root_cert}: not a PEM certificate ({exc.reason})"
                ) from None
            context.verify_mode = ssl.CERT_REQUIRED
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """grpc.aio's server credentials from the same files."""
        root = self.root_cert.read_bytes() if self.mutual and self.root_cert else None
        return grpc.ssl_server_credentials(
            [(self.server_key.read_bytes(), self.server_cert.read_bytes())],
            root_certificates=root,
            require_client_auth=self.mutual,
        )


def _readable(path: str, flag: str) -> Path:
    file = Path(path)
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise TlsSettingsError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    return file
