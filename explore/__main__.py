"""`python -m explore`: samples, measures, trains and analyses design-space variants (see explore/main.py)."""

from absl import flags

from core import cli
from explore import main

flags.adopt_module_key_flags(main)  # --help lists the flags main.py defines

if __name__ == "__main__":
    cli.run(main.main, safe_stops=True)
