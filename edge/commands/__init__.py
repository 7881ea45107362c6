"""One module per `edge-asr` sub-command.

Each module's docstring first line is its help text; it defines
`add_arguments(parser)` and `run(args) -> int` (the exit status).
"""
