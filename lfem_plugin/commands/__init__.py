"""One module per ``lfem-reid`` subcommand, each with ``add_args(parser)`` and ``run(args) -> int``."""
