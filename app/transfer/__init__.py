"""Bulk export and import of a project as NDJSON: ``export`` writes it, ``survey`` checks
every line of a file before ``import_`` writes any (resumable and idempotent by id: ``ids``),
``graph_lines`` puts its graph through the graph store, ``console`` is the CLI's side, with
progress bars, and ``router`` the streaming endpoints. The lines are ``records``."""
