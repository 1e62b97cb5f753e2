"""Fan-out scale benchmark (`python -m bench`, `make bench`): see docs/fanout-scale.md."""
