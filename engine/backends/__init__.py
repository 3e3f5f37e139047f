"""Backends: one batch-first protocol (:class:`engine.types.Backend`), one module per library."""
