"""``python -m tiers._cli``: the same as the ``tiers`` command."""

from ._app import main

if __name__ == "__main__":
    raise SystemExit(main())
