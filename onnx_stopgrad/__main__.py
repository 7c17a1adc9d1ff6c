"""``python -m onnx_stopgrad`` runs the CLI."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="onnx-stopgrad")
