"""`python -m facenms ...` (also what torchrun -m facenms runs)."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the first modules load: one line, like later
    sys.stderr.write("facenms: interrupted\n")
    sys.exit(130)

main()
