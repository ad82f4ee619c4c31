"""The command line: `vdjax spirals`, argument checks, clear errors."""
