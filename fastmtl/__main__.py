"""``python -m fastmtl`` (also what ``torchrun -m fastmtl train`` runs)."""
import sys

from .cli import main

sys.exit(main())
