"""Ingest: accepts comments from HTTP and the inbound topic, gives them stable ids, drops duplicates."""
