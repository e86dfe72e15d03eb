"""Errors a user can fix: the CLI prints them on one line, without a traceback."""


class UserError(Exception):
    """Bad input (a file, a field, a flag): the message names where and what."""
