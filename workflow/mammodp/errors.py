"""One exception type for problems the user can fix; the CLI prints it without a traceback."""


class UserError(Exception):
    """A bad input, config value or missing file, with a message that names it and the fix."""
