"""One module per `face-agent` subcommand, each with `add_parser(subparsers)` and `run(args) -> int`."""
