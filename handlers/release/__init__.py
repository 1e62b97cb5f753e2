"""Lambda: lift the quarantine or hold of one AMI on one group (DESIGN §5.7, §5.10)."""
