"""Events: logs in-real-life events and field visits with their outcomes, linked to incidents."""
