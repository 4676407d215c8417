"""The one exception type a user sees as a plain sentence (the CLI prints it without a traceback)."""


class KdError(Exception):
    """A failure caused by the user's input or environment, explained in one sentence."""
