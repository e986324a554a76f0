"""The agent's error tree."""

from __future__ import annotations


class AgentError(Exception):
    """Something the agent could not do; the message is meant for a person."""


class ConfigError(AgentError):
    """A setting is missing, malformed or contradicts another."""
