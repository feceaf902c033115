"""One module per ``lfem-reid`` subcommand (its name with ``_`` for ``-``), each with ``HELP``, ``add_args(parser)`` and
``run(args) -> int``; ``_model`` holds what the commands that load a trained checkpoint share."""
