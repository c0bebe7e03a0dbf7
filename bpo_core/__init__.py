"""bpo_core: Black-box Prompt Optimization (Cheng et al., ACL 2024) without any framework.

>>> from bpo_core import BPOOptimizer
>>> optimizer = BPOOptimizer.default()          # embedded, offline
>>> optimizer.optimize("how can I create a profile on Facebook?")  # doctest: +SKIP

Heavy libraries (torch, transformers) load only when a model does.
"""

from __future__ import annotations

from bpo_core.config import OptimizerConfig
from bpo_core.errors import (
    BPOError,
    DataFormatError,
    GenerationError,
    InvalidPromptError,
    ModelLoadError,
    OptimizerTimeoutError,
)
from bpo_core.formats import BPO_INST_TEMPLATE, BPO_SYSTEM_PROMPT, STYLES, ChatFormat, InstFormat, PromptFormat
from bpo_core.generation import MODES, GenerationSettings, settings_for_mode
from bpo_core.guard import GuardConfig
from bpo_core.optimizer import BPOOptimizer
from bpo_core.result import FallbackKind, OptimizationResult

__version__ = "0.1.0"

__all__ = [
    "BPOOptimizer",
    "OptimizerConfig",
    "OptimizationResult",
    "FallbackKind",
    "STYLES",
    "GuardConfig",
    "GenerationSettings",
    "settings_for_mode",
    "MODES",
    "PromptFormat",
    "InstFormat",
    "ChatFormat",
    "BPO_INST_TEMPLATE",
    "BPO_SYSTEM_PROMPT",
    "BPOError",
    "InvalidPromptError",
    "ModelLoadError",
    "GenerationError",
    "DataFormatError",
    "OptimizerTimeoutError",
    "__version__",
]
