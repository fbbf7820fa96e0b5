"""Errors a user can act on: each names the file (and record) at fault."""


class CurationError(Exception):
    """A problem with input, configuration or stored data, explained for a person."""


class InputError(CurationError):
    """A bad input record or file, raised in strict mode."""

    def __init__(self, file: str, line: int | None, reason: str, detail: str = ""):
        where = f"{file}:{line}" if line is not None else file
        message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        super().__init__(message)
        self.file, self.line, self.reason, self.detail = file, line, reason, detail


class IntegrityError(CurationError):
    """Stored data does not match its manifest (checksum, size or row count)."""
