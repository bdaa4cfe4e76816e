"""The command's logging: one logger per package (``sotalign``, ``orchestrator``; modules log to
``getLogger(__name__)`` beneath them), their level from ``--quiet`` / ``--verbose``, one handler on
stderr. Ray Train workers and Tune trial actors are other processes: they set up the same from the
level their driver hands them (``level()``), so ``--quiet`` reaches them too."""

from __future__ import annotations

import logging
import sys

from orchestrator.redaction import RedactingFilter

PACKAGES = ("sotalign", "orchestrator")
QUIET, DEFAULT, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG  # --quiet, neither, --verbose


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (a test's capture, a redirect), not as it was
    when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:  # StreamHandler.__init__ sets it: the property above wins
        pass


class _Format(logging.Formatter):
    """An info line as it is; the others lead with their level (``warning: ...``), as the command's
    ``error:`` lines do."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def configure(level: int) -> None:
    """Both packages' loggers at ``level``, writing to stderr through one handler (called again, it
    replaces the handler it added: no line printed twice), and the root logger's level."""
    handler = _Stderr()
    handler.setFormatter(_Format())
    handler.addFilter(RedactingFilter())  # no secret in a log line (orchestrator/redaction.py)
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, _Stderr)] + [handler]
        logger.propagate = False  # a host's root handler (Ray's, pytest's) would print each line again
    # other libraries' info lines on the root logger (in a Ray Train worker: a report of every result,
    # printed by the root handler Ray Train sets up there) only with --verbose
    logging.getLogger().setLevel(logging.INFO if level <= VERBOSE else logging.WARNING)


def level() -> int:
    """The level this process logs at: what a worker or trial actor it starts sets up."""
    return logging.getLogger("orchestrator").getEffectiveLevel()


def chatty() -> bool:
    """Whether info lines (progress among them) are shown: not ``--quiet``."""
    return level() <= logging.INFO
