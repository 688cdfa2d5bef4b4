"""The web console: hand-written ES modules, HTML and CSS served at ``/ui`` (no build step)."""
