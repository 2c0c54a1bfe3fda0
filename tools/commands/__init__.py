"""Subcommands of `hola`, in the order `hola --help` lists them (module names under tools/commands/)."""

COMMANDS = ["check", "env", "train", "eval", "tune", "db", "bench", "emit", "diff", "build"]
