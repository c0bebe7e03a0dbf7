"""Local Hugging Face transformers backend: generation on a loaded causal LM.

Greedy decoding of Llama-family models runs on the lean forward with continuous batching
(``lean_llama.py``, ``continuous.py``); the rest goes to transformers ``generate``. Loading
(devices, dtypes, adapters, hub checks) is in ``loading.py``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from bpo_core.addition_probe import AdditionProbe, Score, find_probe, prompt_summaries, summarize
from bpo_core.backends.continuous import ContinuousDecoder
from bpo_core.backends.decode import greedy_decode, supports
from bpo_core.backends.engine_thread import load_on_engine, run_on_engine, when_idle
from bpo_core.backends.lean_llama import LeanLlama, lean_supported
from bpo_core.backends.loading import load_causal_lm
from bpo_core.errors import BPOError, GenerationError
from bpo_core.formats import PromptFormat, check_style
from bpo_core.generation import GenerationSettings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: Shorter shared prefixes are recomputed with each batch rather than copied from the cache.
MIN_SHARED_PREFIX = 4
#: Prompt states kept between the safety gate's and the addition gate's calls on one batch.
PROMPT_STATES_KEPT = 256


class HFBackend:
    """A causal LM and its tokenizer, generating many rewrites per ``generate`` call.

    Plain greedy decoding on Llama-family models runs the lean forward with continuous batching
    (``continuous.py``): at most ``max_batch_size`` rows decode at once, rows leave at EOS, waiting
    prompts join, and concurrent calls share steps. Everything else goes to ``generate`` in
    length-sorted batches of at most ``max_batch_size``. Model work runs on the engine thread
    (``engine_thread.py``); the tokenizer is guarded by a lock (fast tokenizers are not
    thread-safe).
    """

    #: ``style="auto"`` rewrites (THUDM/BPO and most checkpoints); the embedded model augments.
    default_style = "rewrite"
    #: ``None``: the optimizer picks the format from the checkpoint (see ``formats.format_for``).
    default_format: PromptFormat | None = None
    #: Greedy ``generate`` honours ``settings.nothing_above`` (see ``GenerationSettings``).
    scores_stopping = True

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str | None = None,
        max_batch_size: int = 32,
        num_threads: int | None = None,
        default_format: PromptFormat | None = None,
        default_style: str | None = None,
        addition_probe: AdditionProbe | None = None,
    ) -> None:
        """``default_format``/``default_style``: what the optimizer uses for this model unless told
        otherwise (``None``: the format is picked from the checkpoint, the style is ``rewrite``).
        ``addition_probe``: the learned addition guard fitted for these weights (see
        ``bpo_core.addition_probe``); ``None``: additions are kept on the clause rules alone."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if default_format is not None:
            self.default_format = default_format
        if default_style is not None:
            self.default_style = check_style(default_style)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.addition_probe = addition_probe
        self.name = name or str(getattr(model.config, "_name_or_path", type(model).__name__))
        if addition_probe is not None:  # it changes results, so cached results key on it
            self.name += f"+guard@{addition_probe.digest()}"
        self.max_batch_size = max_batch_size
        self.device = str(next(model.parameters()).device)
        # One re-entrant lock for the model *and* the tokenizer: HF fast tokenizers are not
        # safe to use from several threads at once ("Already borrowed").
        self._lock = threading.RLock()
        self._pad_id = self._pick_pad_id()
        self._newline_id = self._single_token_id("\n")
        #: Use the lean greedy loop (bpo_core.backends.decode) for plain greedy decoding.
        self.fast_greedy = supports(model)
        #: ...and run it on the lean Llama forward, sharing the template prefix's KV (lean_llama.py).
        self.lean_forward = lean_supported(model)
        self._decoder: ContinuousDecoder | None = None
        self._template_prefixes: dict[Any, list[int]] = {}
        self._prompt_states: dict[tuple[str, str], dict[str, list[float]]] = {}
        if num_threads is not None:
            import torch

            torch.set_num_threads(num_threads)
        if self.lean_forward:
            self._continuous_decoder()  # starts packing its fp16 weight copies while the engine thread is idle

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: Any = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        adapter: str | os.PathLike[str] | None = None,
        max_batch_size: int = 32,
        num_threads: int | None = None,
        name: str | None = None,
    ) -> HFBackend:
        """Load a causal LM checkpoint (a hub id or a local folder), optionally with a LoRA adapter.

        What is accepted and read: :func:`~bpo_core.backends.loading.load_causal_lm`. Loading
        runs on the engine thread (see engine_thread.py).
        """
        path = str(name_or_path)

        def load() -> HFBackend:
            model, tokenizer, loaded_name = load_causal_lm(
                path,
                device=device,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle,
                revision=revision,
                adapter=adapter,
            )
            return cls(
                model,
                tokenizer,
                name=name or loaded_name,
                max_batch_size=max_batch_size,
                num_threads=num_threads,
                addition_probe=find_probe(adapter, path),
            )

        return load_on_engine(load, repr(path))

    # --------------------------------------------------------------- generation
    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        if not prompts:
            return []
        deciding = settings.nothing_above is not None and not settings.do_sample
        if self.lean_forward and self._plain_greedy(settings.model_copy(update={"nothing_above": None})):
            # The decoder decides add-or-not on the first step's logits, over the shared template KV.
            return self._lean_generate(prompts, fmt, settings)
        if not deciding:
            return run_on_engine(self._generate, prompts, fmt, settings)
        stops = self.stop_probability(prompts, fmt)
        going = [i for i, p in enumerate(stops) if p < settings.nothing_above]  # type: ignore[operator]
        texts = [""] * len(prompts)
        if going:
            at_least_one = settings.model_copy(update={"nothing_above": None, "min_new_tokens": 1})
            generated = run_on_engine(self._generate, [prompts[i] for i in going], fmt, at_least_one)
            for i, text in zip(going, generated):
                texts[i] = text
        return texts

    def addition_scores(self, views: list[str], additions: list[str], fmt: PromptFormat) -> list[Score] | None:
        """The addition probe's scores of each addition to its prompt (``None``: no probe).

        One forward per (view, addition) over ``fmt``'s input followed by the addition's tokens,
        through the probe's layer only; on the lean forward the template prefix's KV is reused.
        """
        probe = self.addition_probe
        if probe is None or not views:
            return None if probe is None else []
        return run_on_engine(self._addition_scores, probe, views, additions, fmt)

    def _addition_scores(
        self, probe: AdditionProbe, views: list[str], additions: list[str], fmt: PromptFormat
    ) -> list[Score]:
        scores = []
        with self._lock:
            for view, addition in zip(views, additions):
                prompt_ids = self._encode([view], fmt)[0]
                addition_ids = list(self.tokenizer(addition, add_special_tokens=False)["input_ids"])
                states = self._probe_states(probe, prompt_ids, addition_ids, fmt)
                cut = len(states) - len(addition_ids)
                scores.append(probe.score(summarize(states, cut, probe.parts)))
        return scores

    def addition_gate_scores(self, views: list[str], fmt: PromptFormat) -> list[float] | None:
        """The probe's gate: per view, the probability that an addition would help (``None``: no gate).

        One forward per view through the probe's layer only (see :meth:`addition_scores`).
        """
        probe = self.addition_probe
        if probe is None or probe.gate is None:
            return None
        gate = probe.gate
        return [gate.score(summary[gate.reads]) for summary in self.prompt_summaries(views, fmt)]

    def safety_notes(
        self, views: list[str], fmt: PromptFormat, flagged: list[bool]
    ) -> list[tuple[float, str | None]] | None:
        """The probe's safety gate: per view, its probability and the safety note the view gets
        (``None``: none; ``flagged``: the risk rules flag the view); ``None`` when the probe has no
        safety gate. Shares its forward with :meth:`addition_gate_scores`."""
        probe = self.addition_probe
        if probe is None or probe.safety is None:
            return None
        reads = probe.safety.reads
        summaries = self.prompt_summaries(views, fmt)
        return [probe.safety_note(summary[reads], flagged=f) for summary, f in zip(summaries, flagged)]

    def prompt_summaries(self, views: list[str], fmt: PromptFormat) -> list[dict[str, list[float]]]:
        """Per view, the summaries the probe's gates read (``bpo_core.addition_probe.PROMPT_PARTS``)
        of its states at the probe's layer; ``[]`` without a probe."""
        probe = self.addition_probe
        if probe is None or not views:
            return []
        return run_on_engine(self._prompt_summaries, probe, views, fmt)

    def _prompt_summaries(
        self, probe: AdditionProbe, views: list[str], fmt: PromptFormat
    ) -> list[dict[str, list[float]]]:
        summaries = []
        with self._lock:
            for view in views:
                key = (fmt.template, view)
                summary = self._prompt_states.pop(key, None)
                if summary is None:
                    summary = prompt_summaries(self._probe_states(probe, self._encode([view], fmt)[0], [], fmt))
                # Both gates read these: keep the last few for the other one's call.
                self._prompt_states[key] = summary
                while len(self._prompt_states) > PROMPT_STATES_KEPT:
                    del self._prompt_states[next(iter(self._prompt_states))]
                summaries.append(summary)
        return summaries

    def _probe_states(
        self, probe: AdditionProbe, prompt_ids: list[int], addition_ids: list[int], fmt: PromptFormat
    ) -> Any:
        """Hidden states at the probe's layer over the prompt (after the template prefix, whose KV
        is cached on the lean forward) and the addition; transformers' forward elsewhere."""
        import torch

        try:
            with torch.inference_mode():
                if self.lean_forward:
                    prefix = self._template_prefix(fmt)
                    shared = prefix if prompt_ids[: len(prefix)] == prefix and len(prompt_ids) > len(prefix) else []
                    rest = prompt_ids[len(shared) :] + addition_ids
                    return self._continuous_decoder().lean.hidden_states(shared, rest, probe.layer)
                ids = torch.tensor([prompt_ids + addition_ids], dtype=torch.long, device=self.model.device)
                out = self._transformers_model()(input_ids=ids, output_hidden_states=True)
                return out.hidden_states[probe.layer][0]
        except Exception as exc:
            raise GenerationError(f"Scoring an addition failed: {exc}") from exc

    def stop_probability(self, prompts: list[str], fmt: PromptFormat) -> list[float]:
        """The model's probability of ending at once (its first new token is end-of-text), per prompt.

        Greedy decoding ends whenever end-of-text is the single likeliest first token, even when
        most of the probability is spread over ways to continue; this lets the optimizer compare
        "nothing" against "something" instead.
        """
        if not prompts:
            return []
        return run_on_engine(self._stop_probability, prompts, fmt)

    def _stop_probability(self, prompts: list[str], fmt: PromptFormat) -> list[float]:
        import torch

        eos = self.tokenizer.eos_token_id
        with self._lock:
            encoded = self._encode(prompts, fmt)
            out: list[float] = []
            for start in range(0, len(encoded), self.max_batch_size):
                input_ids, attention = self._left_padded(encoded[start : start + self.max_batch_size])
                positions = (attention.cumsum(-1) - 1).clamp(min=0)  # as generate() does for left padding
                try:
                    with torch.inference_mode():
                        logits = self._transformers_model()(
                            input_ids=input_ids.to(self.device),
                            attention_mask=attention.to(self.device),
                            position_ids=positions.to(self.device),
                        ).logits[:, -1]
                except Exception as exc:
                    raise GenerationError(f"Generation failed: {exc}") from exc
                out += torch.softmax(logits.float(), dim=-1)[:, eos].tolist()
        return out

    def _left_padded(self, ids: list[list[int]]) -> tuple[Any, Any]:
        """(input_ids, attention_mask) with left padding: every row ends at the last column, where
        its next token is predicted and its generated tokens line up."""
        import torch

        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attention[row, width - len(seq) :] = 1
        return input_ids, attention

    def _encode(self, prompts: list[str], fmt: PromptFormat) -> list[list[int]]:
        try:
            return [fmt.encode(p, self.tokenizer) for p in prompts]
        except Exception as exc:
            raise GenerationError(f"Could not build the optimizer input: {exc}") from exc

    def _generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        with self._lock:
            encoded = self._encode(prompts, fmt)
            order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
            outputs: list[str] = [""] * len(prompts)
            for start in range(0, len(order), self.max_batch_size):
                chunk = order[start : start + self.max_batch_size]
                texts = self._generate_chunk([encoded[i] for i in chunk], [prompts[i] for i in chunk], settings)
                for i, text in zip(chunk, texts):
                    outputs[i] = text
        return outputs

    def _generate_chunk(self, ids: list[list[int]], raw: list[str], settings: GenerationSettings) -> list[str]:
        import torch

        input_ids, attention = self._left_padded(ids)
        width = input_ids.shape[1]
        if self._plain_greedy(settings):
            try:
                with torch.inference_mode():
                    rows = greedy_decode(
                        self._transformers_model(),
                        input_ids.to(self.device),
                        attention.to(self.device),
                        max_new_tokens=settings.max_new_tokens,
                        eos_ids=[self.tokenizer.eos_token_id],
                        max_time=settings.max_time,
                    )
            except Exception as exc:
                raise GenerationError(f"Generation failed: {exc}") from exc
            return self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        kwargs = self._generate_kwargs(raw, settings)
        kwargs["stopping_criteria"] = _progress_criteria()
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        try:
            with torch.inference_mode():
                out = self._transformers_model().generate(
                    input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
                )
        except Exception as exc:
            raise GenerationError(f"Generation failed: {exc}") from exc
        new_tokens = out[:, width:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def _lean_generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        """Plain greedy on the lean forward; concurrent calls share decode steps (see continuous.py)."""
        with self._lock:
            ids = self._encode(prompts, fmt)
            template = self._template_prefix(fmt)
            decoder = self._continuous_decoder()
        # The template's leading tokens are the same for every prompt: share their KV. Each row
        # keeps at least one token of its own so its first logits come from its own prompt.
        shared = len(os.path.commonprefix([template, *ids])) if template else 0
        shared = min(shared, min(len(x) for x in ids) - 1)
        try:
            rows = decoder.generate(
                ids,
                prefix_length=shared if shared >= MIN_SHARED_PREFIX else 0,
                max_new_tokens=settings.max_new_tokens,
                max_time=settings.max_time,
                stop_at=None if settings.do_sample else settings.nothing_above,
            )
        except BPOError:
            raise
        except Exception as exc:
            raise GenerationError(f"Generation failed: {exc}") from exc
        with self._lock:
            return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    def _continuous_decoder(self) -> ContinuousDecoder:
        if self._decoder is None or self._decoder.lean.model is not self.model:
            lean = LeanLlama(self.model)
            self._decoder = ContinuousDecoder(
                lean, eos_ids=[self.tokenizer.eos_token_id], pad_id=self._pad_id, model_lock=self._lock
            )
            if lean.half_weights:
                when_idle(functools.partial(self._pack_half_weights, lean))
        self._decoder.max_batch_size = self.max_batch_size
        return self._decoder

    def _pack_half_weights(self, lean: LeanLlama) -> bool:
        """One step of packing ``lean``'s fp16 weight copies (engine-thread idle work); done once
        they are packed or ``lean`` is no longer this backend's."""
        if self._decoder is None or self._decoder.lean is not lean:
            return True
        with self._lock:
            return lean.pack_half_weights()

    def _template_prefix(self, fmt: PromptFormat) -> list[int]:
        """The tokens every prompt of ``fmt`` starts with (two probe prompts' common prefix)."""
        key: Any = fmt
        try:
            hash(fmt)
        except TypeError:  # an unhashable custom format: recompute (two short tokenizations)
            key = None
        if key is not None and key in self._template_prefixes:
            return self._template_prefixes[key]
        try:
            a, b = fmt.encode("A", self.tokenizer), fmt.encode("Z", self.tokenizer)
        except Exception:  # a format that cannot encode probes just gets no shared prefix
            return []
        prefix = a[: len(os.path.commonprefix([a, b]))]
        if key is not None:
            self._template_prefixes[key] = prefix
        return prefix

    def _transformers_model(self) -> Any:
        """The model for transformers' own forward and ``generate`` (a ``LiteLlama`` loads it on first use)."""
        full = getattr(self.model, "transformers_model", None)
        return full() if callable(full) else self.model

    def _plain_greedy(self, settings: GenerationSettings) -> bool:
        """Whether the lean greedy loop gives exactly what ``generate`` would (see decode.py)."""
        return (
            self.fast_greedy
            and not settings.do_sample
            and not settings.banned_words
            and not settings.stop_at_newline
            and settings.min_new_tokens_extra is None
            and settings.min_new_tokens is None
            and settings.nothing_above is None
            and self.tokenizer.eos_token_id is not None
        )

    def _generate_kwargs(self, raw: list[str], settings: GenerationSettings) -> dict[str, Any]:
        eos = self.tokenizer.eos_token_id
        eos_ids = [eos] if eos is not None else []
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.do_sample,
            "num_beams": 1,
            "pad_token_id": self._pad_id,
            "use_cache": True,
        }
        if settings.max_time is not None:
            kwargs["max_time"] = settings.max_time
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:  # silence transformers' warnings about sampling params on greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.stop_at_newline and self._newline_id is not None:
            eos_ids.append(self._newline_id)
        if eos_ids:
            kwargs["eos_token_id"] = eos_ids
        if settings.banned_words:
            kwargs["bad_words_ids"] = [
                self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in settings.banned_words
            ]
        if settings.min_new_tokens is not None:
            kwargs["min_new_tokens"] = min(settings.min_new_tokens, settings.max_new_tokens)
        if settings.min_new_tokens_extra is not None:
            # The authors force at least (prompt tokens + 5) new tokens; in a batch use the shortest.
            shortest = min(self.count_tokens(p) for p in raw)
            kwargs["min_new_tokens"] = min(shortest + settings.min_new_tokens_extra, settings.max_new_tokens)
        return kwargs

    # ------------------------------------------------------------------ helpers
    def _pick_pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def _single_token_id(self, text: str) -> int | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return int(ids[-1]) if ids else None


def _progress_criteria() -> Any:
    """A stopping criterion that never stops ``generate``; each step marks progress (bpo_core.waits)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from bpo_core import waits

    class _Progress(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            waits.beat()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Progress()])
