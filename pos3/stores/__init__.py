"""Stores that ship with pos3 (each registers through the ``pos3`` entry-point group)."""
