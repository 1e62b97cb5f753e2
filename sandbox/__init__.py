"""Local emulation of what moto lacks, shared by the tests and the `make demo` story."""
