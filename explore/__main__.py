"""`python -m explore`: samples, measures, trains and analyses design-space variants (see explore/main.py)."""

from core import cli
from explore import main

if __name__ == "__main__":
    cli.run(main.main, main.FLAGS, safe_stops=main.SAFE_STOPS)
