"""``python -m nixlet``: the ``nixlet`` command (see docs/cli.md)."""

from nixlet.cli.main import main

if __name__ == "__main__":
    main()
