"""`python -m skyclass` (and `torchrun -m skyclass`): the same CLI as the `skyclass` script."""

from skyclass.cli import main

if __name__ == "__main__":
    main()
