"""CLI subcommands, one module each.

Every module here defines ``NAME`` (the subcommand), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. The CLI discovers them automatically,
so adding a command never touches a shared file. Commands are thin: they parse
arguments and call library functions; the library never parses argv.
"""
