"""Project exceptions: each names the file and what is wrong with it."""


class SplatForgeError(Exception):
    """Base class for errors a user can act on (bad input, failed stage)."""


class InputError(SplatForgeError, ValueError):
    """Bad input: the message names the file and the problem."""


class NotImplementedStageError(SplatForgeError, NotImplementedError):
    """A pipeline stage that has not landed yet (honest error, no placeholder output)."""
