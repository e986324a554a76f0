"""This machine's agent id, made once and kept in the state directory."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from agent.errors import AgentError
from tracker.errors import InvalidArgument
from tracker.model import check_agent_id


def load_agent_id(state_dir: Path) -> str:
    """This machine's agent id, made once and kept in the state directory."""
    path = state_dir / "agent-id"
    try:
        agent_id = path.read_text().strip()
        check_agent_id(agent_id)
        return agent_id
    except FileNotFoundError:
        pass
    except (OSError, InvalidArgument) as exc:
        raise AgentError(
            f"{path} does not hold a valid agent id ({exc}); delete it to make a new one"
        ) from exc
    agent_id = f"{socket.gethostname().split('.')[0][:40]}-{secrets.token_hex(4)}"
    agent_id = "".join(c if c.isalnum() or c in "._-" else "-" for c in agent_id)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(agent_id + "\n")
    tmp.replace(path)
    return agent_id


def existing_agent_id(state_dir: Path) -> str:
    """This machine's agent id if a daemon ever ran with this state directory, else ""."""
    try:
        agent_id = (state_dir / "agent-id").read_text().strip()
        return check_agent_id(agent_id)
    except (OSError, InvalidArgument):
        return ""
