"""Doorways that speak other memory services' APIs, each translated onto the native services
(ingest, memories, retrieve, jobs): no behaviour is implemented twice."""
