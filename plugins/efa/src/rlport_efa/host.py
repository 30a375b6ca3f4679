"""Where on this machine the plugin looks: one filesystem root (``/`` unless ``RLPORT_EFA_ROOT``
points elsewhere, as the tests do with a fake tree) under which sysfs, ``/opt`` and the loader path
are read, and the environment the checks read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT_ENV = "RLPORT_EFA_ROOT"

# Where the EFA installer and aws-ofi-nccl builds put the plugin (AWS EFA guide; NeMo-RL #2410).
PLUGIN_DIRS = (
    "/opt/amazon/ofi-nccl/lib",
    "/opt/amazon/ofi-nccl/lib64",
    "/opt/aws-ofi-nccl/lib",
    "/opt/amazon/efa/lib",
)
EFA_PREFIX = "/opt/amazon/efa"


@dataclass(frozen=True)
class Host:
    """The filesystem root and environment the probe, the environment plan and the doctor read."""

    root: Path = Path("/")
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Host:
        env = dict(os.environ if env is None else env)
        return cls(Path(env.get(ROOT_ENV) or "/"), env)

    def path(self, absolute: str) -> Path:
        """``absolute`` (a path on a real machine) under this host's root."""
        return self.root / absolute.lstrip("/")

    def loader_dirs(self) -> list[str]:
        """Folders on ``LD_LIBRARY_PATH``, in order, as the user wrote them."""
        return [d for d in self.env.get("LD_LIBRARY_PATH", "").split(":") if d]
