"""`python -m facenms ...` (also what torchrun -m facenms runs)."""
from .cli import main

main()
