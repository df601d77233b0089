"""``python -m diffinfer.cli``: the command line."""

from diffinfer.cli import main

raise SystemExit(main())
