"""Measure a testbed policy: greedy accuracy, sample accuracy, pass@k and majority@k on test chains,
plus what the exact PRM says about the sampled chains. Runs the policy through the project's own
transformers backend, so what is measured is what a search sees."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pumsearch.search.config import DEFAULT_SYSTEM_PROMPT
from pumsearch.search.grading import extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import GenerationRequest, SamplingParams, ScoreItem
from pumsearch.testbed.scorers import TestbedPRM
from pumsearch.testbed.tasks import testbed_problems


def is_right(answer: str | None, reference: str | None) -> bool:
    return answer is not None and reference is not None and answer.strip() == reference.strip()


def majority(answers: list[str | None]) -> str | None:
    """The most frequent stated answer (first seen wins ties); None when no sample states one."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def sample(
    generator: Any, problems: list[Problem], n: int, temperature: float, max_tokens: int, seed: int
) -> list[list[str]]:
    """``n`` solutions per problem (texts), sampled with per-problem seeds."""
    requests = []
    for i, problem in enumerate(problems):
        text, ids = generator.chat_prompt(problem.question, DEFAULT_SYSTEM_PROMPT)
        params = SamplingParams(temperature=temperature, top_p=1.0, max_tokens=max_tokens)
        requests.append(GenerationRequest(text, ids, n, params, seed=seed * 1_000_003 + i))
    outputs = generator.generate_sync(requests)
    return [[c.text for c in out.completions] for out in outputs]


def evaluate_policy(
    generator: Any,
    spec: str = "standard",
    *,
    samples: int = 8,
    temperature: float = 0.8,
    max_tokens: int = 96,
    seed: int = 0,
) -> dict[str, Any]:
    problems = testbed_problems(spec)
    greedy = sample(generator, problems, 1, 0.0, max_tokens, seed)
    sampled = sample(generator, problems, samples, temperature, max_tokens, seed)
    prm = TestbedPRM()
    totals: Counter[str] = Counter()
    for problem, (greedy_text,), texts in zip(problems, greedy, sampled, strict=True):
        answers = [extract_answer(t) for t in texts]
        right = [is_right(a, problem.answer) for a in answers]
        totals["greedy"] += is_right(extract_answer(greedy_text), problem.answer)
        totals["sample"] += sum(right)
        totals["pass"] += any(right)
        totals["majority"] += is_right(majority(answers), problem.answer)
        for text, ok in zip(texts, right, strict=True):
            score = prm.score_one(ScoreItem(problem, tuple(p for p in text.split("\n\n") if p.strip()), True))
            totals["prm_clean"] += score.value == 1.0
            totals["detour_chains"] += "detour" in score.extra["labels"]
            totals["right_answer_wrong_step"] += ok and score.value == 0.0
    count, draws = len(problems), len(problems) * samples
    return {
        "spec": spec,
        "problems": count,
        "samples": samples,
        "temperature": temperature,
        "seed": seed,
        "greedy_accuracy": round(totals["greedy"] / count, 4),
        "sample_accuracy": round(totals["sample"] / draws, 4),
        f"pass@{samples}": round(totals["pass"] / count, 4),
        f"majority@{samples}": round(totals["majority"] / count, 4),
        "samples_all_steps_correct": round(totals["prm_clean"] / draws, 4),
        "samples_with_detour": round(totals["detour_chains"] / draws, 4),
        "samples_right_answer_wrong_step": round(totals["right_answer_wrong_step"] / draws, 4),
    }


CARD_HEAD = """# Testbed policy: {name}

A small Llama-architecture causal LM trained from scratch on CPU on gold solutions of synthetic
arithmetic chains (pumsearch/testbed). It is a research student for the testbed, not a general
model: it knows only questions like `start 7, add 5, times 3, subtract 4.`

## Training

- parameters: {parameters:,} (size `{size}`)
- steps: {steps} x batch {batch_size} = {examples_seen:,} chains; {seconds} s on {threads} shared
  CPU thread(s); final loss {final_loss}
- data: train split (seed {seed}), {min_ops}-{max_ops} operations, operands 1-9, multipliers 2-5,
  values 0-50, detour chance {detours} per operation
- a wall-time budget (`--minutes` without `--steps`) reaches a different step count on another
  machine, and its learning-rate schedule follows the clock: only a step budget reproduces a run
- optimiser: AdamW, peak learning rate {learning_rate}, {warmup_steps} warm-up steps, cosine decay
  over the wall-time budget; loss on the assistant turn only
- tokenizer: `tokenizers` WordLevel (numbers 0-999 as single tokens, prompt words, ASCII
  fallback); chat template `<|system|>...\\n<|user|>...\\n<|assistant|>...<|end|>`

## Scores (test split; never seen in training)

sample acc: mean accuracy of single samples at temperature T; pass@k: some sample right;
majority@k: the most frequent answer right; all steps correct / with detour: share of samples the
exact step PRM finds wholly right / holding a detour step.

| chains | problems | greedy | sample acc | pass@k | majority@k | all steps correct | with detour |
|---|---|---|---|---|---|---|---|
"""

CARD_ROW = (
    "| `{spec}` | {problems} | {greedy_accuracy:.3f} | {sample_accuracy:.3f} (T={temperature}) | {passk:.3f} "
    "(k={samples}) | {majk:.3f} | {samples_all_steps_correct:.3f} | {samples_with_detour:.3f} |"
)


def data_card(name: str, training: dict[str, Any], results: list[dict[str, Any]], commands: list[str]) -> str:
    """The DATA_CARD.md of a shipped policy: how it was trained and how it scores."""
    head = CARD_HEAD.format(
        name=name, **{k: v for k, v in training.items() if k != "settings"}, **training["settings"]
    )
    rows = [
        CARD_ROW.format(passk=r[f"pass@{r['samples']}"], majk=r[f"majority@{r['samples']}"], **r)
        for r in results
    ]
    tail = [
        "",
        "Made with:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "Raw numbers: training.json and evaluation.json beside this card.",
        "",
    ]
    return head + "\n".join(rows + tail)


def train_command(policy_dir: Path, settings: dict[str, Any]) -> str:
    """The ``pumsearch testbed train`` command line that reproduces a policy's training settings."""
    steps = f" --steps {settings['max_steps']}" if settings.get("max_steps") else ""
    return (
        f"pumsearch testbed train {policy_dir} --size {settings['size']}{steps} "
        f"--minutes {settings['max_seconds'] / 60:g} --batch-size {settings['batch_size']} "
        f"--learning-rate {settings['learning_rate']} --min-ops {settings['min_ops']} "
        f"--max-ops {settings['max_ops']} --detours {settings['detours']} --seed {settings['seed']} "
        f"--threads {settings['threads']}"
    )


def write_card(policy_dir: Path, name: str, results: list[dict[str, Any]], commands: list[str]) -> None:
    training = json.loads((policy_dir / "training.json").read_text())
    (policy_dir / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    shown = policy_dir.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    commands = [train_command(shown, training["settings"]), *commands]
    (policy_dir / "DATA_CARD.md").write_text(data_card(name, training, results, commands))
