"""Optional stores for pos3, installed with extras (``pip install pos3[gcs]``, ``pos3[azure]``)."""
