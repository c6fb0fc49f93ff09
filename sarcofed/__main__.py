"""`python -m sarcofed` runs the console script."""

from sarcofed.cli import main

main()
