"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from a user: config, arguments, data paths, files. Never a bug in sslsearch."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset is not where the user said it is."""


class ModelFileError(UserError):
    """A saved model or checkpoint is missing, corrupted, truncated or not ours."""


class NotPrunableError(UserError):
    """The model has no structure of the requested kind (e.g. depth_wise on a plain VGG)."""
