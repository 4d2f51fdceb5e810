"""One exception family: the CLI turns a BirderIndexError into a one-line `Error: ...` and exit code 1."""


class BirderIndexError(Exception):
    """A user-facing error: bad input, a missing file, an index that does not fit the request."""


class UnknownBackbone(BirderIndexError):
    """A model name that the registry does not know."""


class CheckpointError(BirderIndexError):
    """A weights file that cannot be read as a birder checkpoint (format, keys, shapes, sha256)."""


class DownloadError(BirderIndexError):
    """A download that failed, was truncated or did not match its sha256."""


class ImageError(BirderIndexError):
    """An image that cannot be decoded."""


class IndexNotFound(BirderIndexError):
    """No index directory where one was expected."""


class IndexMismatch(BirderIndexError):
    """An index built with another model, dimension or collection than the one asked for."""


class IndexBusy(BirderIndexError):
    """Another process is writing the index."""
