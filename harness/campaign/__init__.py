"""Campaigns: a list the system under test fans out itself, triggered on the timeline (docs/campaigns.md).

``spec`` is the ``campaign:`` section's model, ``lists`` makes and checks the list files, ``serve`` serves
them read-only on loopback, ``trigger`` asks the SUT to send, ``run`` is what the runner holds.
The per-recipient analysis is the reports' (mailstorm.reports.campaign)."""
