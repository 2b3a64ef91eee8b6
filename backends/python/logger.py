"""`pb_utils.Logger`: model log lines go to the server's 'trident' logger, tagged with the
model file and line that logged them."""

from __future__ import annotations

import enum
import logging

_logger = logging.getLogger("trident.python_model")


class LogLevel(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_LEVELS = {
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.VERBOSE: logging.DEBUG,
}


class Logger:
    """Static methods, as in Triton: `Logger.log_info("ready")`, `Logger.log(m, Logger.ERROR)`."""

    LogLevel = LogLevel
    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message: str, level: int = LogLevel.INFO) -> None:
        _emit(message, level)

    @staticmethod
    def log_info(message: str) -> None:
        _emit(message, LogLevel.INFO)

    @staticmethod
    def log_warn(message: str) -> None:
        _emit(message, LogLevel.WARNING)

    @staticmethod
    def log_error(message: str) -> None:
        _emit(message, LogLevel.ERROR)

    @staticmethod
    def log_verbose(message: str) -> None:
        _emit(message, LogLevel.VERBOSE)


def _emit(message: str, level: int) -> None:
    # stacklevel 3: the record names the model's line, not this module's.
    _logger.log(_LEVELS[LogLevel(level)], "%s", message, stacklevel=3)
