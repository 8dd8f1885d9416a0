"""mailstorm: load and chaos testing for email pipelines. One import root.

The ground of the package lives here and is what every part may import: the ledger (the one contract
between processes), the error tree, the SMTP replies, the endpoint type, free ports and readiness, the
loopback guard, YAML loading, the plugin registry every extension point registers by, and the command
dispatcher. On top of it, each a subpackage kept in a folder of
its own at the top of the repository (``package-dir`` in setup.py maps them):

- ``mailstorm.fake_esp``   the fake ESP (SMTP, HTTP APIs, faults, profiles, webhooks, control API);
- ``mailstorm.scenarios``  the load side (Locust users, shapes, messages) and the scenario library;
- ``mailstorm.reports``    analysis and renderers;
- ``mailstorm.harness``    the orchestrator on top: scenario model, run lifecycle, targets, timeline.

The ground never imports the packages above it (a test checks), except the dispatcher, which loads each
package's subcommands by name when the command line is parsed.
"""

__version__ = "0.1.0"

PYTHON_M = ("-P", "-m")
"""How mailstorm starts a module of its own in a child Python (``[sys.executable, *PYTHON_M, module]``):
``-P`` keeps the working directory off ``sys.path``, so a run started inside a source checkout with a
non-editable install imports the installed package, not the checkout's ``mailstorm/`` folder (the ground
alone: the subpackages are mapped in at install)."""
