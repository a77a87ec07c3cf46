"""Print the vLLM command line and Python that serve an exported directory: `compass-jax
serve-command`, with the same flags and errors.

    python convert/serve_command.py out/e5-fp8
"""

import sys

from compass_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve-command", *sys.argv[1:]]))
