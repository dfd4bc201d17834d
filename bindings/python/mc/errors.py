"""Exceptions raised for mc statuses: one class per MC_ERR_* code, all subclasses of mc.Error.
Each class is named as its code after MC_ERR_ in CamelCase (MC_ERR_INVALID_ARG -> InvalidArg), as
Go's ErrInvalidArg and Rust's ErrorCode::InvalidArg are; InvalidArgument stays as an alias."""

__all__ = [
    "Error", "InvalidArg", "InvalidArgument", "NoMemory", "NotFound", "OutOfRange", "Exists",
    "Busy",
    "Timeout", "PeerDown", "Transport", "Unsupported", "Metadata", "Internal",
    "BufferTooSmall", "Canceled", "Denied", "error_class",
]


class Error(Exception):
    """A failed mc_* call: .status is the MC_ERR_* code (negative int), .message the text of
    mc_last_error() read right after the failing call."""

    status = None  # the class's own code; instances carry the actual one

    def __init__(self, status, message=""):
        super().__init__(status, message)
        self.status = int(status)
        self.message = message

    def __str__(self):
        from . import _lib  # late: errors.py must import without the library
        name = _lib.status_str(self.status)
        return f"{self.message} [{name}, {self.status}]" if self.message else f"{name} [{self.status}]"

    def __repr__(self):
        return f"{type(self).__name__}({self.status}, {self.message!r})"

    def __reduce__(self):  # picklable across processes
        return (type(self), (self.status, self.message))


class InvalidArg(Error, ValueError):
    status = -1


InvalidArgument = InvalidArg  # the name before the bindings agreed on one shape


class NoMemory(Error):
    status = -2


class NotFound(Error):
    status = -3


class OutOfRange(Error):
    status = -4


class Exists(Error):
    status = -5


class Busy(Error):
    status = -6


class Timeout(Error):
    status = -7


class PeerDown(Error):
    status = -8


class Transport(Error):
    status = -9


class Unsupported(Error):
    status = -10


class Metadata(Error):
    status = -11


class Internal(Error):
    status = -12


class BufferTooSmall(Error):
    status = -13


class Canceled(Error):
    status = -14


class Denied(Error):
    """The peer was not admitted (auth_token missing or different), or the buffer's access
    (Engine.set_access) forbids the request."""
    status = -15


_BY_STATUS = {cls.status: cls for cls in (
    InvalidArg, NoMemory, NotFound, OutOfRange, Exists, Busy, Timeout, PeerDown, Transport,
    Unsupported, Metadata, Internal, BufferTooSmall, Canceled, Denied)}


def error_class(status):
    """The exception class for a status; mc.Error itself for codes this package does not know."""
    return _BY_STATUS.get(int(status), Error)
