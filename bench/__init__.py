"""The benchmark (not part of the installed library): ``python -m bench`` from the repository root."""
