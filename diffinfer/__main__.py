"""``python -m diffinfer``: the command line (also what ``torchrun -m diffinfer`` runs)."""

from diffinfer.cli import main

raise SystemExit(main())
