"""Test helpers for pos3 and for store authors: local servers and the store conformance suite."""
