"""Terrain's four deployable services: ingest, sentiment, escalation, events."""
