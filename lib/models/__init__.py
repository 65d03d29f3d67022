"""Models of the book, one module per family (import them from their module, e.g. ``lib.models.simple``)."""
