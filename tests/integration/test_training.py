"""Training pipeline: pair readers on real data formats, a tiny real LoRA run, loading its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bpo_core import BPOOptimizer, DataFormatError
from bpo_core.cli import app
from bpo_core.training import load_pairs, pairs_from_records
from bpo_core.training.sft import TrainConfig, train

DATA = Path(__file__).resolve().parents[1] / "data"
BPO_TEST = Path(__file__).resolve().parents[2] / "bpo_core" / "data" / "bpo_test.json"


def test_reads_rich_bpo_records():
    pairs = load_pairs(DATA / "bpo_train_val_40.json")
    assert 25 < len(pairs) <= 40
    assert all(p.prompt and p.optimized for p in pairs)
    # context records train on the instruction alone (context is protected at inference)
    raw = json.loads((DATA / "bpo_train_val_40.json").read_text())
    ctx = next(r for r in raw if r.get("context", "").strip() and r["instruction"] in {p.prompt for p in pairs})
    assert ctx["context"] not in next(p.prompt for p in pairs if p.prompt == ctx["instruction"])


def test_reads_thudm_fields_and_authors_training_format(tmp_path):
    test = json.loads(BPO_TEST.read_text())[:3]
    jsonl = tmp_path / "thudm.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in test) + "\n")
    assert [p.prompt for p in load_pairs(jsonl)] == [r["prompt"].strip() for r in test]
    authors = tmp_path / "train.jsonl"
    authors.write_text(json.dumps({"id": 0, "paragraph": [{"q": "hi there", "a": "Say hi politely."}]}) + "\n")
    assert load_pairs(authors)[0].optimized == "Say hi politely."


def test_reads_hf_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": "a b c", "optimized_prompt": "A, B and C."}])
    assert load_pairs(ds)[0].optimized == "A, B and C."


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "x"}\n', r"line 1: missing field 'optimized_prompt'"),
        (
            '{"prompt": "x", "optimized_prompt": "y"}\n{"prompt": "", "optimized_prompt": "y"}\n',
            r"line 2: field 'prompt' is empty",
        ),
        ('{"prompt": 3, "optimized_prompt": "y"}\n', r"field 'prompt' must be a string"),
        ("not json\n", r"line 1: invalid JSON"),
        ("", r"file is empty"),
        ('["a"]', r"line 1: expected a JSON object"),
    ],
)
def test_bad_data_names_file_line_field(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=match) as err:
        load_pairs(path)
    assert str(path) in str(err.value)


def test_missing_file():
    with pytest.raises(DataFormatError, match="no such file"):
        load_pairs("/nonexistent/pairs.json")


PAIRS = pairs_from_records(
    [
        {"prompt": "Write a poem about cats.", "optimized_prompt": "Write a playful rhyming poem about cats."},
        {"prompt": "Explain gravity.", "optimized_prompt": "Explain gravity in simple terms with an example."},
        {"prompt": "List three fruits.", "optimized_prompt": "List three common fruits and one fact about each."},
        {"prompt": "Describe Paris.", "optimized_prompt": "Describe Paris, including its landmarks and culture."},
    ]
)


def test_tiny_lora_run_end_to_end(tmp_path):
    out = tmp_path / "adapter"
    info = train(
        PAIRS, TrainConfig(output_dir=str(out), max_steps=2, batch_size=2, eval_fraction=0.25, logging_steps=1)
    )
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert info["metrics"]["train_pairs"] == 3 and "eval_loss" in info["metrics"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "embedded:smollm2-135m-instruct"  # portable, not a local path
    assert not list(tmp_path.glob("adapter.tmp.*"))  # nothing half-written left behind
    opt = BPOOptimizer.from_pretrained(str(out), max_new_tokens=12)
    res = opt.rewrite("Write a poem about dogs.")
    assert isinstance(res.optimized, str) and res.optimized.strip()
    # the output folder is not overwritten by accident, and --resume continues from checkpoints
    with pytest.raises(FileExistsError):
        train(PAIRS, TrainConfig(output_dir=str(out), max_steps=2, batch_size=2))
    info = train(PAIRS, TrainConfig(output_dir=str(out), max_steps=3, batch_size=2, eval_fraction=0, resume=True))
    assert info["metrics"]["train_pairs"] == 4


def test_cli_train_reports_bad_data(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    result = CliRunner().invoke(app, ["train", "--data", str(bad), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "missing field 'optimized_prompt'" in result.output
    assert not (tmp_path / "o").exists()


def test_self_training_round_keeps_the_frozen_layers(tmp_path):
    """Continuing the shipped adapter with frozen layers changes only the layers above them, so a
    learned guard reading layer 16 scores exactly as before."""
    from safetensors.torch import load_file

    from bpo_core.default_model import SHIPPED_ADAPTER
    from bpo_core.training.sft import layer_index

    out = tmp_path / "round"
    config = TrainConfig(
        output_dir=str(out),
        init_adapter=str(SHIPPED_ADAPTER),
        frozen_layers=16,
        max_steps=2,
        batch_size=2,
        eval_fraction=0,
        learning_rate=1e-2,
    )
    info = train(PAIRS, config)
    assert info["config"]["init_adapter"] == str(SHIPPED_ADAPTER)
    before = load_file(str(SHIPPED_ADAPTER / "adapter_model.safetensors"))
    after = load_file(str(out / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    changed = {layer_index(k) for k in before if not before[k].float().equal(after[k].float())}
    assert changed and min(changed) >= 16  # the upper layers learned, the lower ones did not move


def test_frozen_layers_must_exist(tmp_path):
    with pytest.raises(ValueError, match="frozen_layers=99"):
        train(PAIRS, TrainConfig(output_dir=str(tmp_path / "o"), frozen_layers=99, max_steps=1, batch_size=2))
    with pytest.raises(ValueError, match="full fine-tuning"):
        train(PAIRS, TrainConfig(output_dir=str(tmp_path / "f"), init_adapter="x", full_finetune=True, max_steps=1))
