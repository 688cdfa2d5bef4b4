"""The Mem0 OSS REST server's routes (its ``server/main.py``), under ``/mem0/oss``."""
