"""Assembly and emulation tooling for the benches and tests (not installed with the package)."""
