"""Analysis (ledger -> metrics -> capacity, recovery, sizing) and renderers (HTML, Markdown, JSON, JUnit)."""
