"""What a language-model student generates, judged the way GKD, DistiLLM and MiniLLM judge it (issue #23).

On held-out prompts the student writes continuations at a temperature; then, per generated token:
- TNLL: the teacher's NLL of them (quality as the teacher sees it; lower is better);
- self-NLL: the student's own NLL of them (low means little diversity);
- TNLL - self-NLL: a one-sample estimate of the sequence-level reverse KL, E_q[log q - log p];
and over the generated text: word validity (the share of generated words that occur in the training text) and
distinct-n (unique word n-grams over all word n-grams). Glossary: b batch, l length, v vocabulary.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

WORD = re.compile(r"[A-Za-z]+")


def words(text: str) -> list[str]:
    """Lower-case alphabetic words (digits, code and punctuation are not words)."""
    return [w.lower() for w in WORD.findall(text)]


def word_validity(generated: list[str], vocabulary: set[str]) -> float:
    """Share of the generated texts' words found in `vocabulary`; 0 when nothing word-like was generated."""
    ws = [w for text in generated for w in words(text)]
    return sum(w in vocabulary for w in ws) / len(ws) if ws else 0.0


def distinct_n(generated: list[str], n: int) -> float:
    """Unique word n-grams over all word n-grams, pooled over the texts (n-grams never cross two texts)."""
    grams = [tuple(ws[i:i + n]) for text in generated for ws in [words(text)] for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def sequence_nll(model: nn.Module, seq: torch.Tensor, start: int) -> torch.Tensor:
    """Per-sequence mean NLL (nats per token) under `model` of tokens seq[:, start:], each given all before it;
    seq (b, l) must fit the model's context."""
    log_p = F.log_softmax(model(seq[:, :-1]).float(), -1)  # (b, l - 1, v): position t predicts token t + 1
    picked = log_p.gather(-1, seq[:, 1:].unsqueeze(-1)).squeeze(-1)  # (b, l - 1)
    return -picked[:, start - 1:].mean(1)


def generation_metrics(samples: torch.Tensor, prompt_len: int, student: nn.Module, teacher: nn.Module,
                       decode, vocabulary: set[str]) -> dict:
    """The figures above for `samples` (b, l): prompts of `prompt_len` tokens and the student's continuations."""
    tnll = sequence_nll(teacher, samples, prompt_len)
    self_nll = sequence_nll(student, samples, prompt_len)
    texts = [decode(row[prompt_len:].tolist()) for row in samples]
    return {"tnll": float(tnll.mean()), "self_nll": float(self_nll.mean()),
            "sequence_reverse_kl": float((tnll - self_nll).mean()),
            "word_validity": word_validity(texts, vocabulary),
            "distinct1": distinct_n(texts, 1), "distinct2": distinct_n(texts, 2)}


def evaluate_generation(student: nn.Module, teacher: nn.Module, data, context: int,
                        temperatures: tuple[float, ...] = (1.0, 0.7), prompts: int = 32, seed: int = 4321) -> dict:
    """generation_metrics of a char-LM student (kdcompile.lm) on fixed held-out prompts of half the context, the
    continuation filling the other half, at each temperature: {"T1.0": {...}, "T0.7": {...}}."""
    from kdcompile.lm import sample_continuations

    def decode(ids: list[int]) -> str:
        return "".join(data.vocab[i] for i in ids)

    vocabulary = set(words(decode(data.train.tolist())))
    half = context // 2
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data.test) - half, (prompts,), generator=gen)
    prompt = torch.stack([data.test[s:s + half] for s in starts.tolist()])  # (prompts, half)
    student.eval()
    out = {}
    for t in temperatures:
        samples = sample_continuations(student, prompt, context - half, torch.Generator().manual_seed(seed),
                                       temperature=t)
        out[f"T{t}"] = generation_metrics(samples, half, student, teacher, decode, vocabulary)
    return out
