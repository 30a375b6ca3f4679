"""The fake ``torch_npu.optim``: ``NpuFusedAdamW`` computing torch's AdamW and recording every
construction and step in :data:`FAKE` (``FAKE.calls``)."""

from __future__ import annotations

from rlport.fakes.fused_adam import FakeFusedAdam

FAKE = FakeFusedAdam("NpuFusedAdamW", adam_w_mode=None)
NpuFusedAdamW = FAKE.cls
