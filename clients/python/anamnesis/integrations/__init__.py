"""Adapters that let agent frameworks use Anamnesis through their own interfaces.

Each submodule imports its framework, installed with the matching extra
(``pip install "anamnesis-client[langgraph]"`` for :mod:`anamnesis.integrations.langgraph`).
"""
