"""One exception type for problems the user can fix; the CLI prints it without a traceback."""


class UserError(Exception):
    """A bad input, config value or missing file, with a message that names it and the fix."""


def check_choice(key: str, value, allowed) -> None:
    """Refuse a value outside ``allowed`` for the config key ``key``, as the schema does."""
    if value not in allowed:
        raise UserError(f"{key} = {value!r} is not allowed; allowed values: {list(allowed)}")
