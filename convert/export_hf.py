"""Export a model as a Hugging Face + sentence-transformers directory (bf16 | fp32 | FP8 for
vLLM): the same function and flags as `compass-jax export`.

    python convert/export_hf.py --model multilingual-e5-small --out out/e5-fp8 --fp8
"""

import argparse
import sys

from compass_jax.commands import export

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=export.__doc__)
    export.add_arguments(parser)
    try:
        export.run(parser.parse_args())
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        sys.exit(f"export_hf: error: {e}")
