"""One exception type for problems the user can fix (bad input, bad config, bad checkpoint).

The CLI prints these as a single line (`error: ...`) and exits non-zero; everything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""
