"""Exceptions raised by bpo_core.

Every error a user can trigger derives from :class:`BPOError`, so one ``except`` clause
catches them all; input errors also derive from the built-in types callers expect.
"""

from __future__ import annotations


class BPOError(Exception):
    """Base class of every error raised by bpo-prompt."""


class InvalidPromptError(BPOError, ValueError, TypeError):
    """A prompt of the wrong type or shape was given (e.g. ``None`` or an ``int``).

    Subclasses both ``ValueError`` and ``TypeError`` so either conventional handler works.
    """


class ModelLoadError(BPOError, RuntimeError):
    """The optimizer model or its tokenizer could not be loaded."""


class GenerationError(BPOError, RuntimeError):
    """The optimizer model failed while generating a rewrite."""


class DataFormatError(BPOError, ValueError):
    """A data file (training pairs, feedback records) is malformed.

    The message names the file, the record (line) and the field at fault.
    """


class OptimizerTimeoutError(BPOError, TimeoutError):
    """A call passed its bound: its ``timeout_s``, or the optimizer made no progress for too long.

    The optimizer turns it into its fallback (the original prompt); ``on_error="raise"`` raises it.
    """
