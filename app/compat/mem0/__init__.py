"""Mem0 compatibility: the Platform API that ``mem0ai``'s ``MemoryClient`` and
``AsyncMemoryClient`` call (``router``, under ``/mem0``) and the OSS REST server's routes
(``oss.router``, under ``/mem0/oss``), both translated onto the native services.

Mapping decisions (the README's table states them for users):

- scopes: ``user_id``, ``agent_id``, ``run_id`` are the native scope ids; ``app_id`` has no
  native meaning and is kept as the metadata key ``app_id`` (filterable, shown back as
  ``app_id``), so an add needs one of the other three as well;
- an inferred add is the native ``infer: true`` add: the messages are stored at once, and
  the consolidation job's id is Mem0's ``event_id``; ``async_mode: false`` waits for the job;
- updates keep the old text in history; deletes erase (every copy of the words);
- filters are Mem0's grammar translated onto the native one (``filters``) and validated
  there: an unknown field or operator is a 422 naming it, never an empty result.
"""
