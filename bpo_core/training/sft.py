"""Supervised fine-tuning of a BPO optimizer (LoRA through peft, or full fine-tuning).

Built on the transformers ``Trainer``, so the same code runs on CPU, one GPU, or many GPUs under
``accelerate launch``. The loss covers the target (optimized prompt) tokens only. The finished
model is written to a temporary folder and renamed into place, so the output path never holds a
half-written model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bpo_core.atomic import atomic_dir
from bpo_core.embedded import EMBEDDED_BASE_ID
from bpo_core.formats import ChatFormat, InstFormat, PromptFormat
from bpo_core.training.data import Pair

logger = logging.getLogger(__name__)

TRAINING_INFO = "bpo_training.json"


class TrainConfig(BaseModel):
    """Settings of one training run (``bpo train --help`` lists them as flags)."""

    model_config = ConfigDict(frozen=True)

    base: str = EMBEDDED_BASE_ID
    output_dir: str
    fmt: Literal["auto", "chat", "inst"] = "auto"
    epochs: float = Field(default=3.0, gt=0)
    learning_rate: float = Field(default=5e-4, gt=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=384, ge=16)
    full_finetune: bool = False
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    merge: bool = False
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 0
    resume: bool = False
    logging_steps: int = Field(default=10, ge=1)
    max_steps: int = -1
    num_threads: int | None = None
    #: Continue training this LoRA adapter instead of starting a new one (self-training rounds).
    init_adapter: str | None = None
    #: The first ``frozen_layers`` decoder layers keep their weights (adapter weights too): hidden
    #: states up to that layer stay exactly as they were, so a learned guard reading them stays valid.
    frozen_layers: int = Field(default=0, ge=0)


def _load_base(config: TrainConfig) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path = config.base
    if config.base == EMBEDDED_BASE_ID:
        from bpo_core.embedded import converted_base_dir

        base_path = str(converted_base_dir())
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, use_safetensors=True)
    return model, tokenizer, base_path


def _format(config: TrainConfig, tokenizer: Any) -> PromptFormat:
    if config.fmt == "chat" or (config.fmt == "auto" and getattr(tokenizer, "chat_template", None)):
        return ChatFormat()
    return InstFormat()


def tokenize_pairs(pairs: list[Pair], tokenizer: Any, fmt: PromptFormat, max_length: int) -> list[dict[str, list[int]]]:
    """Token ids and labels (-100 on the prompt) for each pair; pairs over ``max_length`` are dropped."""
    eos = tokenizer.eos_token_id
    rows = []
    for pair in pairs:
        prompt_ids = fmt.with_style(pair.style).encode(pair.prompt, tokenizer)
        target_ids = list(tokenizer(pair.optimized, add_special_tokens=False)["input_ids"]) + [eos]
        if len(prompt_ids) + len(target_ids) > max_length:
            continue
        rows.append(
            {
                "input_ids": prompt_ids + target_ids,
                "attention_mask": [1] * (len(prompt_ids) + len(target_ids)),
                "labels": [-100] * len(prompt_ids) + target_ids,
            }
        )
    return rows


def split_pairs(pairs: list[Pair], eval_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded shuffle, then hold out ``eval_fraction`` for the eval loss."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = int(len(pairs) * eval_fraction)
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def layer_index(name: str) -> int | None:
    """The decoder layer a parameter or adapter tensor name belongs to (``...layers.7.mlp...`` -> 7), if any."""
    match = re.search(r"\.layers\.(\d+)\.", name)
    return None if match is None else int(match.group(1))


def freeze_layers(model: Any, n_layers: int) -> int:
    """Stop training every parameter of the first ``n_layers`` decoder layers (and the embeddings).

    Returns how many trainable tensors were frozen; raises if the model has no such layers.
    """
    frozen, seen = 0, set()
    for name, param in model.named_parameters():
        layer = layer_index(name)
        if layer is not None:
            seen.add(layer)
        if (layer is not None and layer < n_layers) or (layer is None and "embed_tokens" in name):
            frozen += int(param.requires_grad)
            param.requires_grad_(False)
    if not seen or n_layers > max(seen) + 1:
        raise ValueError(f"frozen_layers={n_layers}, but the model has {len(seen)} decoder layers")
    return frozen


def _data_hash(pairs: list[Pair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(p.style.encode() + b"\2" + p.prompt.encode() + b"\0" + p.optimized.encode() + b"\1")
    return h.hexdigest()[:16]


def train(pairs: list[Pair], config: TrainConfig) -> dict[str, Any]:
    """Fine-tune ``config.base`` on ``pairs``; return the metrics written to ``bpo_training.json``."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    if not pairs:
        raise ValueError("no training pairs")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    output = Path(config.output_dir)
    if output.exists() and any(output.iterdir()) and not config.resume:
        raise FileExistsError(f"{output} exists and is not empty; choose another --output or pass --resume")

    model, tokenizer, base_path = _load_base(config)
    fmt = _format(config, tokenizer)
    train_pairs, eval_pairs = split_pairs(pairs, config.eval_fraction, config.seed)
    train_rows = tokenize_pairs(train_pairs, tokenizer, fmt, config.max_length)
    eval_rows = tokenize_pairs(eval_pairs, tokenizer, fmt, config.max_length)
    if not train_rows:
        raise ValueError(f"every training pair is longer than max_length={config.max_length} tokens")
    logger.info("training on %d pairs (%d held out)", len(train_rows), len(eval_rows))

    if config.init_adapter is not None:
        if config.full_finetune:
            raise ValueError("init_adapter continues a LoRA adapter; it cannot be combined with full fine-tuning")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
    elif not config.full_finetune:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    if config.frozen_layers:
        frozen = freeze_layers(model, config.frozen_layers)
        logger.info("froze %d parameter tensors of the first %d layers", frozen, config.frozen_layers)

    checkpoints = output.parent / (output.name + ".checkpoints")
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(0.05 * len(train_rows) / config.batch_size)),
        logging_steps=config.logging_steps,
        save_strategy="epoch",
        save_total_limit=2,
        eval_strategy="epoch" if eval_rows else "no",
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        remove_unused_columns=False,
        # Batches of similar lengths waste little compute on padding (a big win on CPU).
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        data_collator=collator,
    )
    resume = config.resume and checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "train_pairs": len(train_rows)}
    if eval_rows:
        metrics.update({k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")})
        metrics["eval_pairs"] = len(eval_rows)

    info = {
        "base": config.base,
        "format": type(fmt).__name__,
        "template": fmt.template,
        "styles": sorted({p.style for p in pairs}),
        "config": config.model_dump(),
        "data_sha256_16": _data_hash(pairs),
        "metrics": metrics,
    }
    _save(trainer.model, tokenizer, config, output, info)
    return info


def _save(model: Any, tokenizer: Any, config: TrainConfig, output: Path, info: dict[str, Any]) -> None:
    with atomic_dir(output) as tmp:
        if config.merge and not config.full_finetune:
            model = model.merge_and_unload()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        adapter_cfg = tmp / "adapter_config.json"
        if adapter_cfg.is_file():  # keep adapters portable: name the base, not this machine's path
            cfg = json.loads(adapter_cfg.read_text(encoding="utf-8"))
            cfg["base_model_name_or_path"] = config.base
            adapter_cfg.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        (tmp / TRAINING_INFO).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
