"""Runtime log settings (the logging extension): what GET/POST /v2/logging read and change."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from trident.runtime.errors import InvalidArgumentError

LOGGER_NAME = "trident"


@dataclass
class LogSettings:
    """Field names are the logging extension's JSON keys."""

    log_file: str = ""
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_verbose_level: int = 0
    log_format: str = "default"

    def as_dict(self) -> dict[str, bool | int | str]:
        return asdict(self)

    def update(self, updates: dict[str, object]) -> dict[str, bool | int | str]:
        """Apply a partial update after checking every key and type; returns the new settings."""
        current = asdict(self)
        for key, value in updates.items():
            if key not in current:
                raise InvalidArgumentError(
                    f"unknown log setting '{key}'; known settings: {', '.join(current)}"
                )
            expected = type(current[key])
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidArgumentError(f"log setting '{key}' must be an integer")
            if expected is bool and not isinstance(value, bool):
                raise InvalidArgumentError(f"log setting '{key}' must be a boolean")
            if expected is str and not isinstance(value, str):
                raise InvalidArgumentError(f"log setting '{key}' must be a string")
            if key == "log_format" and value not in ("default", "ISO8601"):
                raise InvalidArgumentError("log_format must be 'default' or 'ISO8601'")
        if "log_file" in updates and updates["log_file"] != self.log_file:
            raise InvalidArgumentError(
                "changing log_file at run time is not supported: start the server with --log-file"
            )
        for key, value in updates.items():
            setattr(self, key, value)
        self.apply()
        return self.as_dict()

    def apply(self) -> None:
        """Set the 'trident' logger's level from these settings."""
        logger = logging.getLogger(LOGGER_NAME)
        if self.log_verbose_level > 0:
            logger.setLevel(logging.DEBUG)
        elif self.log_info:
            logger.setLevel(logging.INFO)
        elif self.log_warning:
            logger.setLevel(logging.WARNING)
        elif self.log_error:
            logger.setLevel(logging.ERROR)
        else:
            logger.setLevel(logging.CRITICAL + 1)
