"""Replay scenarios shipped with escalation (`terrain escalation replay`): YAML files, one per situation."""
