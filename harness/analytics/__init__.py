"""A scenario's ``analytics:`` section: where the ESP's webhooks go and how the SUT's counts are read.

``spec`` (AnalyticsSpec, parsed with the scenario), ``watch`` (AnalyticsWatch: what the runner holds:
the receiver's URL for the ESP, the probe polled during the run and once after the drain, the wait for
the ESP's webhook retries to settle). The judging is mailstorm.reports.analytics.
"""
