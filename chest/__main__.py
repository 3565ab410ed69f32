"""``python -m chest``: the command line of :mod:`chest.cli`."""
from chest.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
