"""``python -m addin.paper``: the same as ``ibxl paper``."""

from .cli import paper

if __name__ == "__main__":
    paper(prog_name="python -m addin.paper")
