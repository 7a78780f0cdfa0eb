"""`python -m train`: trains a network or variant from absl flags (see train/main.py)."""

from absl import flags

from core import cli
from train import main

flags.adopt_module_key_flags(main)  # --help lists the flags main.py defines

if __name__ == "__main__":
    cli.run(main.main, safe_stops=True)
