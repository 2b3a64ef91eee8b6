"""The frontends' security settings, checked together before the server loads any model.

TLS files and restricted-API rules are parsed again by each frontend when it starts (cheap);
checking them here first means a typo in a flag stops the start at once, with a message that
names the flag, instead of after every model has loaded.
"""

from __future__ import annotations

from trident.runtime.settings import ServerSettings

from .restricted_api import RestrictedApis
from .tls import TlsConfig


def check_security_settings(settings: ServerSettings) -> None:
    """Raise TlsSettingsError or RestrictedApiError (both TridentError) for settings that
    cannot work; only the enabled frontends are checked."""
    if settings.allow_grpc:
        TlsConfig.for_grpc(settings)
        RestrictedApis.for_grpc(settings.grpc_restricted_protocol)
    if settings.allow_http:
        TlsConfig.for_http(settings)
        RestrictedApis.for_http(settings.http_restricted_api)
