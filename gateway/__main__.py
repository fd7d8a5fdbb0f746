"""python -m gateway: the same as the `gateway` command."""

from .cli import main

if __name__ == "__main__":
    main()
