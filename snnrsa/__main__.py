"""``python -m snnrsa`` runs the same entry point as the ``snnrsa`` command."""

from snnrsa.cli import main

if __name__ == "__main__":
    main()
