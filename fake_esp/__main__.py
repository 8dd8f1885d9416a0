"""``python -m fake_esp``: run a fake ESP (the same as ``mailstorm esp``)."""

from fake_esp.cli import main

raise SystemExit(main())
