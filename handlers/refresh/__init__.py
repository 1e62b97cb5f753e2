"""Workload refresh Lambda: rolls the account's ECS Auto Scaling groups onto the golden AMI (DESIGN §5)."""
