"""The JSON Schema of report.json, shipped as package data."""
