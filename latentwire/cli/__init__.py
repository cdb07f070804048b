"""Thin command-line entry points; each subcommand parses, loads config, calls the library, writes files."""
