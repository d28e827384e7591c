"""The ``nixlet`` command: a thin layer over the library's functions (docs/cli.md).

The top layer of the package: nothing imports it but ``nixlet.__main__`` and the console
script. It is the only code that imports click and rich (the ``cli`` extra), so that
``import nixlet`` stays fast and works without them.

    main.py      the entry point: says how to install click and rich when they are missing
    app.py       the command group: choosing the store, errors, output, abbreviated refs
    looking.py   init, ls, cat, show, du, find, diff, shell
    changing.py  rm, gc, link, sync, export, import
"""
