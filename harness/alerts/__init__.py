"""Alerts under test: a real Prometheus and Alertmanager started for a run (``stack``), their
notifications received and written to the ledger (``receiver``), the scenario's ``alerts:`` section
(``spec``). The reports judge them per fault window (mailstorm.reports.alerts)."""
