"""Errors an operator can act on. The CLI prints them as one clear line
(never a traceback) and exits non-zero."""


class JvpnError(Exception):
    """Base class: the message says what went wrong and what to do."""


class NotRoot(JvpnError):
    pass


class BccMissing(JvpnError):
    pass


class NoSuchInterface(JvpnError):
    pass


class NotAttached(JvpnError):
    pass


class AlreadyAttached(JvpnError):
    pass


class LoadFailed(JvpnError):
    pass
