"""Escalation: scored comments become incidents, cascades page a person, people act through the API."""
