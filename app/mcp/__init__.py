"""The MCP server: the memory tools (``tools``), defined once over the Python SDK, served over
stdio to a running server (``stdio``, ``anamnesis mcp``) and over streamable HTTP on the API
itself at ``/mcp`` (``http``)."""
