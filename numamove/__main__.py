"""python -m numamove."""

from .entry import run

run()
