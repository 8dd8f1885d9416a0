"""``python -m mailstorm``: the same as the ``mailstorm`` command."""

from mailstorm.cli import main

raise SystemExit(main())
