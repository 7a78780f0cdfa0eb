"""The exception for bad input from a user; command lines report it in one line and exit 2."""


class UserError(ValueError):
    """Bad input (an unknown name, a bad knob, flag or file): the message names it and the fix.

    A ValueError, so that library callers catching ValueError keep working. Anything else that
    escapes a command line is a bug and keeps its traceback.
    """
