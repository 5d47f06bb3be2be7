"""``python -m cyconv``: the same as the ``cyconv`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
