"""`python -m rollout`: the operator CLI of the rollout status (DESIGN §10, "For people")."""
