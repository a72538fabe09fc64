"""PUM training: a few steps on a tiny Qwen3, export in the zhiqix/PUM layout, load it back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pumsearch.pum.pairs import Pair  # noqa: E402
from pumsearch.pum.train import PAPER_SYSTEM_PROMPT, TrainError, TrainSettings, build_head, train_pum  # noqa: E402

QUESTIONS = [f"What is {i} + 3?" for i in range(10)]
PROBE = [("What is 2 + 3?", "2 + 3 = 5"), ("What is 7 + 3?", "7 + 3 = 10\n\nso"), ("What is 1 + 3?", "")]


def fixed_pairs() -> list[Pair]:
    pairs = []
    for i, question in enumerate(QUESTIONS):
        right, wrong = f"{i} + 3 = {i + 3}", f"{i} + 3 = {i + 4}"
        pairs.append(Pair(f"q{i}", question, right, wrong, 1.0, "horizontal", False, 1.0, -1.0, [1.0], [-1.0]))
        pairs.append(Pair(f"q{i}", question, right + "\n\n", right, 0.5, "vertical", False, 1.0, 1.0, [1.0], [1.0]))
    return pairs


@pytest.fixture(scope="module")
def base(tiny_qwen3_dir: Path) -> Path:
    torch.set_num_threads(1)
    return tiny_qwen3_dir


def probe_scores(model) -> list[float]:
    with torch.no_grad():
        return model.scores([model.encode(q, p) for q, p in PROBE]).tolist()


def reference_scores(base: Path, ckpt: Path) -> list[float]:
    """Independent of pumsearch: peft loads the adapter on the base, the head is rebuilt from the
    state dict and model_args.json, the input is rendered by hand (ChatML of tests/tiny_models)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = json.loads((ckpt / "model_args.json").read_text())
    state = torch.load(ckpt / "value_head.pt", weights_only=True)
    head = torch.nn.Sequential(torch.nn.Linear(*reversed(state["0.weight"].shape)),
                               {"relu": torch.nn.ReLU()}[args["value_head_activation"]],
                               torch.nn.Linear(*reversed(state["2.weight"].shape)))
    head.load_state_dict(state)
    config = json.loads((ckpt / "backbone" / "adapter_config.json").read_text())
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"]),
                                      str(ckpt / "backbone")).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    out = []
    for question, prefix in PROBE:
        text = (f"<|im_start|>system\n{PAPER_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                f"<|im_start|>assistant\n{prefix}")
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            out.append(float(head(hidden[0, -1])))
    return out


def test_lora_training_exports_the_released_layout_and_loads_back(base: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "pum"
    settings = TrainSettings(epochs=2, batch_pairs=4, val_fraction=0.3, head_hidden=16, lr=1e-2, head_lr=1e-2)
    report = train_pum(fixed_pairs(), str(base), ckpt, settings, base_name=str(base))
    assert {p.name for p in ckpt.iterdir()} >= {"backbone", "value_head.pt", "model_args.json", "train_args.json",
                                               "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    assert {p.name for p in (ckpt / "backbone").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    adapter = json.loads((ckpt / "backbone" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base) and adapter["peft_type"] == "LORA"
    state = torch.load(ckpt / "value_head.pt", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == {"0.weight": (16, 32), "0.bias": (16,),
                                                             "2.weight": (1, 16), "2.bias": (1,)}
    args = json.loads((ckpt / "model_args.json").read_text())
    assert args["value_head_activation"] == "relu" and args["read_position"] == "last_non_pad_token"
    train_args = json.loads((ckpt / "train_args.json").read_text())
    assert [e["epoch"] for e in train_args["history"]] == [1, 2]
    assert report.train_pairs + report.val_pairs == 20 and report.val_pairs > 0
    assert all(0.0 <= e["val_accuracy"] <= 1.0 for e in report.history)
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(ckpt / "backbone" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # the adapter moved off its zero init

    trained = probe_scores(report.model)
    assert reference_scores(base, ckpt) == pytest.approx(trained, abs=1e-4)


def test_the_pum_scorer_loads_the_export_with_the_same_scores(base: Path, tmp_path: Path) -> None:
    from pumsearch.scorers import load_scorer
    from pumsearch.search.problem import Problem
    from pumsearch.search.protocols import ScoreItem

    ckpt = tmp_path / "pum"
    report = train_pum(fixed_pairs(), str(base), ckpt, TrainSettings(epochs=1, batch_pairs=8, lr=1e-2))
    scorer = load_scorer("pum", model=str(ckpt))
    items = [ScoreItem(Problem(str(i), q), tuple(p.split("\n\n"))) for i, (q, p) in enumerate(PROBE)]
    values = [s.value for s in asyncio.run(scorer.score(items))]
    assert values == pytest.approx(probe_scores(report.model), abs=1e-4)


def test_head_only_training_keeps_the_base_and_learns_the_head(base: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "head"
    settings = TrainSettings(mode="head", epochs=30, batch_pairs=20, head_lr=5e-2, val_fraction=0.0)
    report = train_pum(fixed_pairs(), str(base), ckpt, settings)
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(ckpt / "backbone" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and all(float(v.abs().max()) == 0 for v in lora_b)  # an identity adapter: base unchanged
    assert report.history[-1]["train_accuracy"] > report.history[0]["train_accuracy"] or \
        report.history[-1]["train_accuracy"] == 1.0
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    assert reference_scores(base, ckpt) == pytest.approx(probe_scores(report.model), abs=1e-4)


def test_bad_training_input_is_refused(base: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="no pairs"):
        train_pum([], str(base), tmp_path / "x", TrainSettings())
    with pytest.raises(TrainError, match="mode"):
        TrainSettings(mode="fully")
    head = build_head(8, 0, "gelu")
    assert [type(m).__name__ for m in head] == ["Linear", "GELU", "Linear"] and head[0].out_features == 8
