"""Workload refresh Lambda: moves ECS Auto Scaling groups onto the golden AMI (DESIGN §5)."""
