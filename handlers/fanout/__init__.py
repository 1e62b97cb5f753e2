"""Infra fan-out Lambda: tells every enrolled workload account about a new AMI (DESIGN §4)."""
