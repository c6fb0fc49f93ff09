"""One family of exceptions for everything a user can get wrong, each with the exit code the CLI uses.

Messages follow one pattern: which file, what was expected, what came, and what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class SarcoFedError(Exception):
    """Base class: a problem a person can act on. The CLI prints the message and exits with ``exit_code``."""

    exit_code: int = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class InputDataError(SarcoFedError):
    """A file or table given to SarcoFed cannot be used as it is (wrong modality, missing tag, bad column)."""

    exit_code = 2


class MaskGeometryError(InputDataError):
    """A mask does not lie on its image's grid (size, spacing, position or orientation differ)."""


class SegUnavailableError(InputDataError):
    """No DICOM SEG can be made for this image (NIfTI input, blank study/series UIDs ...).

    The SEG is one output among four: ``predict`` records ``reason`` in result.json and keeps the
    measurement, rather than failing the whole prediction.
    """

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        super().__init__(reason, path)


class ConfigError(SarcoFedError):
    """A setting (preset, cutoff, phase, profile, run config) is unknown or out of range."""

    exit_code = 3


class CheckpointError(SarcoFedError):
    """A model file is missing, unreadable, or was made for something else."""

    exit_code = 4


class NoMeasurementError(SarcoFedError):
    """The input was read but no measurement is given: L3 is not in the series, or not surely found.

    ``predict`` has already written result.json (``measured: false`` and the reason) and the pictures
    by then: the exit code says "look at them", not "nothing happened".
    """

    exit_code = 5
