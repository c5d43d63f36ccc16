"""Command bodies of the ``kdskin`` CLI: each validates its arguments, calls the library and
prints. Only these modules (and :mod:`kdskin.cli`) print results; the library returns values."""
