"""The one exception type that the command line turns into a one-line message and exit status 2."""


class UserError(ValueError):
    """A problem with the user's input (file, variable, option) that the user can fix.

    The message must name the file, variable or option and say what to do. The CLI prints it on
    one line, without a traceback unless ``--debug``, and exits with status 2.

    A ``ValueError``: the library layers (``core``, ``nn``) raise plain ``ValueError``/``TypeError``
    ("expected X, got Y") and never name a config key or option; the layers that know the option
    (``config.validate``, the commands, ``inference``) check it first and raise this, naming it.
    """
