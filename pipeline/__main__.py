"""``python -m pipeline``: the same command as the ``pipeline`` console script."""

from pipeline.cli import main

if __name__ == "__main__":
    main(prog_name="pipeline")
