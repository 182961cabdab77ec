"""The `lowbit` command and its subcommands."""
