"""The pos3 benchmark harness (see README.md here)."""
