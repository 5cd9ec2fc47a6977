"""The one exception type that the command line turns into a one-line message and exit status 2."""


class UserError(Exception):
    """A problem with the user's input (file, variable, option) that the user can fix.

    The message must name the file, variable or option and say what to do. The CLI prints it on
    one line, without a traceback unless ``--debug``, and exits with status 2.
    """
