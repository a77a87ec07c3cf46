"""Print the vLLM command line and Python that serve an exported directory: the same function
as `compass-jax serve-command`.

    python convert/serve_command.py out/e5-fp8
"""

import argparse
import sys

from compass_jax.commands import serve_command

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=serve_command.__doc__)
    serve_command.add_arguments(parser)
    try:
        serve_command.run(parser.parse_args())
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"serve_command: error: {e}")
