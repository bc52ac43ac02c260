"""``python -m vudo``: the same as the ``vudo`` command."""

from vudo.cli import main

if __name__ == "__main__":
    main()
