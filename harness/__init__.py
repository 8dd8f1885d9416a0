"""The orchestrator: scenario model, run lifecycle, SUT targets, chaos timeline, ledger format, CLI."""
