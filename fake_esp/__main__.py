"""``python -m mailstorm.fake_esp``: run a fake ESP (the same as ``mailstorm esp``)."""

from mailstorm.fake_esp.cli import main

raise SystemExit(main())
