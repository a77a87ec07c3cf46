"""Export a model as a Hugging Face + sentence-transformers directory (bf16 | fp32 | FP8 for
vLLM): `compass-jax export`, with the same flags and errors.

    python convert/export_hf.py --model multilingual-e5-small --out out/e5-fp8 --fp8
"""

import sys

from compass_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
