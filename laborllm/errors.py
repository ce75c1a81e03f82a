"""User-facing errors: the CLI turns these into one clear message and exit status 2."""


class UserError(Exception):
    """A mistake in what the user gave us (a file, a column, a row, a folder)."""


class DataError(UserError):
    """Bad panel data: the message names the file and the offending rows or field."""
