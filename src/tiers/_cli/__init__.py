"""The ``tiers`` command line (``pip install "tiers[cli]"``); `main` is the entry point."""

from ._app import main

__all__ = ["main"]
