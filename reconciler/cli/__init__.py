"""The command line: argument parsing, the commands, the demo. Errors become one sentence here."""
