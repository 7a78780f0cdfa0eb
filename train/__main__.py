"""`python -m train`: trains a network or variant from absl flags (see train/main.py)."""

from core import cli
from train import main

if __name__ == "__main__":
    cli.run(main.main, main.FLAGS, safe_stops=main.SAFE_STOPS)
