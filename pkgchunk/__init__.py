"""pkgchunk: rechunk OCI images along package boundaries so updates pull only what changed."""

__version__ = "0.1.0"
