"""Train a Prefix Utility Model with a pairwise Bradley-Terry loss; export the zhiqix/PUM layout.

Model: a causal LM's decoder (LoRA adapters via peft, or frozen with ``mode="head"``) and a scalar
MLP value head on the final hidden state (after the last norm) at the last non-pad token. The input
is exactly what the ``pum`` scorer reads (pumsearch/scorers/pum.py): the chat template with the
system prompt and the question as the user turn, the generation prompt opened, then the prefix text.

Loss, per pair with scores s_a, s_b (a preferred, or a tie):

    preference:  -log sigmoid(s_a - s_b - gamma * (u_a - u_b))      (gamma: adaptive margin, 0 = off)
    tie, "bce":  -(1/2) log sigmoid(s_a - s_b) - (1/2) log sigmoid(s_b - s_a)   (BT with target 1/2)
    tie, "mse":  (s_a - s_b)^2
    total: mean of preference losses and tie_weight x tie losses over the batch's pairs.

The "bce" tie term is the Bradley-Terry likelihood of an outcome of one half: it is smallest at
s_a = s_b (log 2), on the same scale as the preference loss. Export::

    out/backbone/adapter_config.json, adapter_model.safetensors   (base named in the config)
    out/value_head.pt          torch.save(head.state_dict()): "0.weight", "0.bias", "2.weight", ...
    out/model_args.json        activation, head sizes, read position, system prompt, delimiter
    out/train_args.json        every setting, the data counts, and the per-epoch history
    out/tokenizer files + chat_template.jinja
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pumsearch.pum.pairs import Pair
from pumsearch.scorers.hf import SCORER_SYSTEM_PROMPT as PAPER_SYSTEM_PROMPT  # what the pum scorer renders
from pumsearch.scorers.pum import quiet_tied_embeddings

READ_POSITION = "last_non_pad_token"
MODES = ("lora", "head", "full")
KEEP = ("last", "best")
BATCH_ORDERS = ("random", "problem")
SCHEDULES = ("constant", "cosine")
TIE_LOSSES = ("bce", "mse")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")  # those the pum scorer also knows by name


class TrainError(ValueError):
    """Bad training input (the message says what to fix)."""


@dataclass(frozen=True)
class TrainSettings:
    mode: str = "lora"
    epochs: int = 2
    batch_pairs: int = 16
    lr: float = 2e-4  # LoRA weights
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"
    head_hidden: int = 0  # 0: the base's hidden size
    activation: str = "relu"
    tie_loss: str = "bce"
    tie_weight: float = 1.0
    margin_scale: float = 0.0  # gamma, the adaptive margin
    val_fraction: float = 0.1
    max_length: int = 1024  # longer inputs are skipped (the scorer reads whole inputs)
    seed: int = 0
    system_prompt: str = PAPER_SYSTEM_PROMPT  # the pum scorer's default
    step_delimiter: str = "\n\n"
    max_steps: int | None = None  # stop after this many optimiser steps (for quick runs)
    keep: str = "last"  # best: export the epoch with the best held-out pairwise accuracy
    schedule: str = "constant"  # cosine: linear warm-up over 5% of the steps, cosine decay to 0
    batch_order: str = "random"  # problem: a batch holds whole problems' pairs (shared prefixes run once)

    def __post_init__(self) -> None:
        choices = (("mode", MODES), ("tie_loss", TIE_LOSSES), ("activation", ACTIVATIONS), ("keep", KEEP),
                   ("batch_order", BATCH_ORDERS), ("schedule", SCHEDULES))
        for name, allowed in choices:
            value = getattr(self, name)
            if value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise TrainError(f"unknown {flag} {value!r}: use one of {', '.join(allowed)}")
        if self.keep == "best" and self.val_fraction == 0:
            raise TrainError("--keep best needs held-out problems: set --val-fraction above 0")
        if not 0 <= self.val_fraction < 1:
            raise TrainError("--val-fraction must be in [0, 1)")
        if self.epochs < 1 or self.batch_pairs < 1:
            raise TrainError("--epochs and --batch-pairs must be at least 1")


@dataclass
class TrainReport:
    history: list[dict[str, float]] = field(default_factory=list)
    train_pairs: int = 0
    val_pairs: int = 0
    skipped_long: int = 0
    steps: int = 0
    kept_epoch: int = 0  # the epoch whose weights were exported
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)  # the trained PUMModel, to score with in Python


# -- the loss -----------------------------------------------------------------------------------
def pairwise_loss(score_a: Any, score_b: Any, labels: Any, utility_gap: Any, settings: TrainSettings) -> Any:
    """The Bradley-Terry loss with ties (see the module docstring). ``labels`` are 1.0 (a is better)
    or 0.5 (a tie); ``utility_gap`` is u_a - u_b (used by the adaptive margin)."""
    import torch.nn.functional as F

    diff = score_a - score_b
    is_tie = labels == 0.5
    pref = F.softplus(-(diff - settings.margin_scale * utility_gap))  # -log sigmoid(x) = softplus(-x)
    tie = 0.5 * F.softplus(-diff) + 0.5 * F.softplus(diff) if settings.tie_loss == "bce" else diff**2
    per_pair = is_tie * settings.tie_weight * tie + (~is_tie) * pref
    return per_pair.mean()


# -- inputs -------------------------------------------------------------------------------------
def render_input(tokenizer: Any, question: str, prefix: str, system_prompt: str | None) -> str:
    """The scorer's input: chat template (system, user = question, generation prompt), then the
    prefix as the unfinished assistant turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise TrainError("the base model's tokenizer has no chat template, which the PUM input needs")
    messages = [{"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix


def is_held_out(question: str, fraction: float) -> bool:
    """A fixed split by problem, from a hash of its question text: every pair of a problem is on
    one side, and so is the same question labelled under two ids (two data sets may share chains)."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 10_000
    return bucket < fraction * 10_000


def split_pairs(pairs: Sequence[Pair], fraction: float) -> tuple[list[Pair], list[Pair]]:
    train = [p for p in pairs if not is_held_out(p.question, fraction)]
    val = [p for p in pairs if is_held_out(p.question, fraction)]
    return train, val


# -- the model ----------------------------------------------------------------------------------
def build_head(hidden_size: int, head_hidden: int, activation: str) -> Any:
    """Linear(h, m), activation, Linear(m, 1) as an nn.Sequential (state-dict names 0.* and 2.*:
    the pum scorer rebuilds it from the shapes and model_args.json's activation)."""
    import torch

    from pumsearch.scorers.pum import activation_module  # the scorer's own table: the names must agree

    width = head_hidden or hidden_size
    return torch.nn.Sequential(torch.nn.Linear(hidden_size, width), activation_module(activation),
                               torch.nn.Linear(width, 1))


def adapter_config(causal_lm: Any, settings: TrainSettings) -> Any:
    """The peft config of each mode. ``lora`` and ``head``: LoRA adapters (left at their identity
    initialisation in head mode). ``full``: every decoder module with weights is trained as a
    peft ``modules_to_save`` copy, stored whole in the adapter file, so the released layout (base
    + adapter + head) still holds the checkpoint and loads with plain peft. peft needs one LoRA
    target as well: a rank-1 adapter on the LM head, which a PUM never runs (kept at its zero
    initialisation)."""
    from peft import LoraConfig

    if settings.mode == "full":
        decoder = getattr(causal_lm, causal_lm.base_model_prefix)
        weighted = sorted({name.rsplit(".", 1)[-1] for name, module in decoder.named_modules()
                           if name and next(module.parameters(recurse=False), None) is not None})
        lm_head = next(name for name, module in causal_lm.named_modules()
                       if module is causal_lm.get_output_embeddings())
        return LoraConfig(r=1, lora_alpha=1, target_modules=[lm_head], modules_to_save=weighted, bias="none")
    targets: Any = settings.lora_targets if settings.lora_targets == "all-linear" else [
        t.strip() for t in settings.lora_targets.split(",") if t.strip()]
    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=targets, bias="none")


class PUMModel:
    """The trainable PUM: a peft-wrapped causal LM (its decoder runs, the LM head never does) and
    the value head."""

    def __init__(self, base: str, settings: TrainSettings, *, base_name: str | None = None) -> None:
        import torch
        from peft import get_peft_model

        from pumsearch.models import load_pretrained

        self.settings = settings
        self.base = base
        self.base_name = base_name or base
        torch.manual_seed(settings.seed)
        self.tokenizer, causal_lm = load_pretrained(base, dtype=torch.float32, device="cpu")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        with quiet_tied_embeddings():
            self.peft = get_peft_model(causal_lm, adapter_config(causal_lm, settings))
        self.peft.peft_config["default"].base_model_name_or_path = self.base_name
        inner = self.peft.get_base_model()
        self.decoder = getattr(inner, inner.base_model_prefix)  # LoRA layers are injected in place
        self.hidden_size = inner.config.hidden_size
        self.head = build_head(self.hidden_size, settings.head_hidden, settings.activation)
        for name, param in self.peft.named_parameters():
            # head: the base is frozen; full: the LM head's placeholder adapter stays the identity
            if settings.mode == "head" or (settings.mode == "full" and "lora_" in name):
                param.requires_grad_(False)

    def encode(self, question: str, prefix: str) -> list[int]:
        text = render_input(self.tokenizer, question, prefix, self.settings.system_prompt)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def features(self, rows: Sequence[Sequence[int]]) -> Any:
        """Final hidden states at each row's last token (right padding keeps positions exact)."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(list(row))
            mask[i, : len(row)] = 1
        hidden = self.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        last = torch.tensor([len(r) - 1 for r in rows])
        return hidden[torch.arange(len(rows)), last].float()

    def scores(self, rows: Sequence[Sequence[int]]) -> Any:
        return self.head(self.features(rows)).squeeze(-1)

    def trainable(self) -> list[dict[str, Any]]:
        groups = [{"params": list(self.head.parameters()), "lr": self.settings.head_lr}]
        lora = [p for p in self.peft.parameters() if p.requires_grad]
        if lora:
            groups.append({"params": lora, "lr": self.settings.lr})
        return groups

    def train_mode(self, on: bool) -> None:
        self.peft.train(on)
        self.head.train(on)

    def snapshot(self) -> dict[str, Any]:
        """Copies of every trained tensor (head and backbone), for ``restore``."""
        return {"head": {k: v.detach().clone() for k, v in self.head.state_dict().items()},
                "backbone": {n: p.detach().clone() for n, p in self.peft.named_parameters() if p.requires_grad}}

    def restore(self, state: dict[str, Any]) -> None:
        import torch

        self.head.load_state_dict(state["head"])
        with torch.no_grad():
            for name, param in self.peft.named_parameters():
                if name in state["backbone"]:
                    param.copy_(state["backbone"][name])

    def export(self, out: Path, extra: dict[str, Any]) -> Path:
        import torch

        out.mkdir(parents=True, exist_ok=True)
        with quiet_tied_embeddings():  # full mode: its module copies are the weights; the base's stay out
            self.peft.save_pretrained(str(out / "backbone"), save_embedding_layers=self.settings.mode != "full")
        torch.save({k: v.detach().cpu() for k, v in self.head.state_dict().items()}, out / "value_head.pt")
        self.tokenizer.save_pretrained(str(out))
        template = out / "chat_template.jinja"
        if not template.exists() and isinstance(self.tokenizer.chat_template, str):
            template.write_text(self.tokenizer.chat_template, encoding="utf-8")
        widths = [self.hidden_size, self.settings.head_hidden or self.hidden_size, 1]
        model_args = {
            "format": "pumsearch-pum", "base_model": self.base_name, "value_head_activation": self.settings.activation,
            "value_head_sizes": widths, "read_position": READ_POSITION, "hidden_state": "final (after the last norm)",
            "system_prompt": self.settings.system_prompt, "step_delimiter": self.settings.step_delimiter,
            "lora": self.settings.mode == "lora", "mode": self.settings.mode,
        }
        (out / "model_args.json").write_text(json.dumps(model_args, indent=2) + "\n", encoding="utf-8")
        (out / "train_args.json").write_text(json.dumps({**asdict(self.settings), **extra}, indent=2) + "\n",
                                             encoding="utf-8")
        return out


# -- training -----------------------------------------------------------------------------------
@dataclass
class _Encoded:
    a: int  # index into the unique inputs
    b: int
    label: float
    gap: float
    problem: str


def _encode_pairs(model: PUMModel, pairs: Sequence[Pair], inputs: dict[tuple[str, str], int],
                  rows: list[list[int]], report: TrainReport) -> list[_Encoded]:
    out = []
    for pair in pairs:
        index = []
        for prefix in (pair.a, pair.b):
            key = (pair.question, prefix)
            if key not in inputs:
                inputs[key] = len(rows)
                rows.append(model.encode(pair.question, prefix))
            index.append(inputs[key])
        if max(len(rows[i]) for i in index) > model.settings.max_length:
            report.skipped_long += 1
            continue
        out.append(_Encoded(index[0], index[1], pair.label, pair.utility_a - pair.utility_b, pair.problem_id))
    return out


def epoch_order(pairs: Sequence[_Encoded], rng: random.Random, how: str) -> list[_Encoded]:
    """The pairs of one epoch in a random order; ``problem``: problems in a random order, each
    one's pairs together (shuffled), so a batch's pairs share prefixes and the decoder runs on
    fewer unique inputs (several times fewer on the testbed: cheaper full and LoRA training)."""
    if how == "random":
        order = list(pairs)
        rng.shuffle(order)
        return order
    groups: dict[str, list[_Encoded]] = {}
    for pair in pairs:
        groups.setdefault(pair.problem, []).append(pair)
    problems = list(groups)
    rng.shuffle(problems)
    out: list[_Encoded] = []
    for problem in problems:
        rng.shuffle(groups[problem])
        out.extend(groups[problem])
    return out


def pairwise_accuracy(scores: Sequence[float], pairs: Sequence[_Encoded]) -> float:
    """Share of non-tie pairs whose preferred prefix scores strictly higher (nan without any)."""
    prefs = [p for p in pairs if p.label != 0.5]
    if not prefs:
        return float("nan")
    return sum(scores[p.a] > scores[p.b] for p in prefs) / len(prefs)


def train_pum(pairs: Sequence[Pair], base: str, out: Path, settings: TrainSettings, *, base_name: str | None = None,
              log: Callable[[str], None] | None = None) -> TrainReport:
    """Train on ``pairs`` (held-out split by problem), log per-epoch held-out pairwise accuracy,
    export to ``out`` in the zhiqix/PUM layout."""
    import torch

    if not pairs:
        raise TrainError("no pairs to train on: check the pairs file (or lower --margin in `pum pairs`)")
    started = time.perf_counter()
    report = TrainReport()
    model = PUMModel(base, settings, base_name=base_name)
    train, val = split_pairs(pairs, settings.val_fraction)
    inputs: dict[tuple[str, str], int] = {}
    rows: list[list[int]] = []
    train_enc = _encode_pairs(model, train, inputs, rows, report)
    val_enc = _encode_pairs(model, val, inputs, rows, report)
    if not train_enc:
        raise TrainError("every training pair is held out or too long: lower --val-fraction or raise --max-length")
    report.train_pairs, report.val_pairs = len(train_enc), len(val_enc)
    cached = _all_features(model, rows) if settings.mode == "head" else None
    optimiser = torch.optim.AdamW(model.trainable(), weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(train_enc) / settings.batch_pairs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor(settings, min(
        settings.epochs * per_epoch, settings.max_steps or settings.epochs * per_epoch)))
    rng = random.Random(settings.seed)
    best: tuple[float, int, dict[str, Any]] | None = None
    for epoch in range(1, settings.epochs + 1):
        order = epoch_order(train_enc, rng, settings.batch_order)
        losses = []
        model.train_mode(True)
        for start in range(0, len(order), settings.batch_pairs):
            losses.append(_step(model, order[start:start + settings.batch_pairs], rows, cached, optimiser, settings))
            scheduler.step()
            report.steps += 1
            if settings.max_steps is not None and report.steps >= settings.max_steps:
                break
        model.train_mode(False)
        values = score_rows(model, rows, cached)
        entry = {"epoch": epoch, "loss": sum(losses) / len(losses), "steps": report.steps,
                 "train_accuracy": pairwise_accuracy(values, train_enc),
                 "val_accuracy": pairwise_accuracy(values, val_enc)}
        report.history.append(entry)
        if log is not None:
            log(f"epoch {epoch}: loss {entry['loss']:.4f}, train acc {entry['train_accuracy']:.3f}, "
                f"held-out acc {entry['val_accuracy']:.3f}")
        if settings.keep == "best" and (best is None or entry["val_accuracy"] > best[0]):
            best = (entry["val_accuracy"], epoch, model.snapshot())
        if settings.max_steps is not None and report.steps >= settings.max_steps:
            break
    report.kept_epoch = int(report.history[-1]["epoch"])
    if best is not None:
        report.kept_epoch = best[1]
        model.restore(best[2])
    report.seconds = time.perf_counter() - started
    extra = {"base": base, "train_pairs": report.train_pairs, "val_pairs": report.val_pairs,
             "skipped_long": report.skipped_long, "history": _json_safe(report.history),
             "kept_epoch": report.kept_epoch, "seconds": round(report.seconds, 1)}
    model.export(out, extra)
    report.model = model
    return report


def lr_factor(settings: TrainSettings, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier per step: 1, or a linear warm-up over 5% of the steps and a
    cosine decay to 0."""
    if settings.schedule == "constant":
        return lambda step: 1.0
    warmup = max(1, round(0.05 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return factor


def _all_features(model: PUMModel, rows: list[list[int]], batch: int = 32) -> Any:
    """Head-only mode: the frozen decoder's features for every unique input, computed once."""
    import torch

    chunks = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            chunks.append(model.features(rows[start:start + batch]))
    return torch.cat(chunks)


def _step(model: PUMModel, batch: list[_Encoded], rows: list[list[int]], cached: Any, optimiser: Any,
          settings: TrainSettings) -> float:
    import torch

    needed = sorted({p.a for p in batch} | {p.b for p in batch})
    where = {index: i for i, index in enumerate(needed)}
    values = model.head(cached[needed]).squeeze(-1) if cached is not None else model.scores([rows[i] for i in needed])
    score_a = values[torch.tensor([where[p.a] for p in batch])]
    score_b = values[torch.tensor([where[p.b] for p in batch])]
    labels = torch.tensor([p.label for p in batch])
    gaps = torch.tensor([p.gap for p in batch])
    loss = pairwise_loss(score_a, score_b, labels, gaps, settings)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def score_rows(model: PUMModel, rows: list[list[int]], cached: Any = None, batch: int = 32) -> list[float]:
    import torch

    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            if cached is not None:
                values = model.head(cached[start:start + batch]).squeeze(-1)
            else:
                values = model.scores(rows[start:start + batch])
            out.extend(float(v) for v in values)
    return out


def _json_safe(history: list[dict[str, float]]) -> list[dict[str, float | None]]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in e.items()} for e in history]
