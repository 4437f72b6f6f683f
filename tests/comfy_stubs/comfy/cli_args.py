"""Stand-in for ``comfy.cli_args``: the parsed command line (defaults)."""
from types import SimpleNamespace

args = SimpleNamespace(disable_metadata=False, cpu=True, preview_size=512)
