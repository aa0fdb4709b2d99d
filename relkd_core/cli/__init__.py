"""Command-line entry points (``relkd-*``). Progress bars and logging set-up live here only."""
