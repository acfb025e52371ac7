"""A local Segmind: the serverless API, storage and account endpoints over real HTTP, real
outputs made from the inputs, faults on demand.

Start it with `segmind-emulator`, `python -m segmind_provider.testing.emulator`,
or `with SegmindEmulator(time_scale=0.01) as emu: ...` (see docs/emulator.md).
It shares nothing with the provider's client code but the HTTP contract.
"""

from __future__ import annotations

from .app import EmulatorServer
from .config import EmulatorConfig
from .control import EmulatorControl, EmulatorControlError
from .faults import FaultRule
from .models import ModelSpec
from .runner import SegmindEmulator
from .validation import ASPECT_RATIOS

__all__ = [
    "ASPECT_RATIOS",
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorControlError",
    "EmulatorServer",
    "FaultRule",
    "ModelSpec",
    "SegmindEmulator",
]
