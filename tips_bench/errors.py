"""User-facing errors: one clear sentence saying what is wrong and how to fix it."""

from __future__ import annotations


class TipsBenchError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """


class CheckpointError(TipsBenchError):
    """A checkpoint file is missing, unreadable, or of the wrong family or variant."""


class CapabilityError(TipsBenchError):
    """A task asked a backbone for something it cannot do (e.g. text on an image-only model)."""


class DatasetError(TipsBenchError):
    """A dataset root is missing, incomplete, or laid out differently from the official release."""


class InputError(TipsBenchError):
    """A bad argument: an unreadable image, an image size that is not a multiple of the patch size, ..."""
