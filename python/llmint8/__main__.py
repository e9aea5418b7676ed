"""python -m llmint8 COMMAND:
  convert-llama2c MODEL.bin OUTDIR [--tokenizer TOK.bin]   llama2.c checkpoint -> Hugging Face Llama folder
  generate --model DIR_OR_FILE [...]                       generate with transformers + llmint8 (see --help)"""

import argparse
import sys

from .llama2c import convert_llama2c


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmint8", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-llama2c", help="llama2.c checkpoint -> Hugging Face Llama folder")
    convert.add_argument("model", help="llama2.c checkpoint (.bin)")
    convert.add_argument("out_dir", help="folder to write config.json, model.safetensors (and tokenizer.bin)")
    convert.add_argument("--tokenizer", help="llama2.c tokenizer file, copied as tokenizer.bin")
    generate = commands.add_parser("generate", help="generate text (the C++ llmint8-generate's flags)")
    from .generate import add_arguments, main as generate_main

    add_arguments(generate)
    args = parser.parse_args(argv)
    if args.command == "generate":
        return generate_main(args)
    try:
        out = convert_llama2c(args.model, args.out_dir, args.tokenizer)
    except (OSError, ValueError) as error:
        print(f"python -m llmint8 convert-llama2c: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
