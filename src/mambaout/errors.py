"""The one exception type for mistakes a user can make (bad path, wrong model name, mismatched checkpoint, bad flag).

Its message is a single sentence saying what was wrong and what to do; the CLI prints it without a traceback and
exits with status 2. Library callers can catch it like any `ValueError`.
"""


class UserError(ValueError):
    """A user-caused error whose message is meant to be shown as is."""
