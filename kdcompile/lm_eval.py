"""What a language-model student generates, judged the way GKD, DistiLLM and MiniLLM judge it (issue #23).

On held-out prompts the student writes continuations at a temperature; then, per generated token:
- TNLL: the teacher's NLL of them (quality as the teacher sees it; lower is better);
- self-NLL: the student's own NLL of them (low means little diversity);
- TNLL - self-NLL: a one-sample estimate of the sequence-level reverse KL, E_q[log q - log p];
and over the generated text: word validity (the share of generated words that occur in the training text) and
distinct-n (unique word n-grams over all word n-grams). Glossary: b batch, l length, v vocabulary.
"""

from __future__ import annotations

import math
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


def head_tail_kl(log_p: torch.Tensor, log_q: torch.Tensor, k: int) -> dict:
    """Forward KL(p || q) and reverse KL(q || p) per row, each split into the teacher's top-k entries (head) and the
    rest (tail), averaged over rows; and the teacher's mass outside its top-k. log_p, log_q (n, v)."""
    head = torch.zeros_like(log_p, dtype=torch.bool).scatter_(-1, log_p.topk(min(k, log_p.shape[-1]), -1).indices,
                                                              True)
    p, q = log_p.exp(), log_q.exp()
    fkl, rkl = p * (log_p - log_q), q * (log_q - log_p)
    return {"teacher_tail_mass": float((p * ~head).sum(-1).mean()),
            "fkl_head": float((fkl * head).sum(-1).mean()), "fkl_tail": float((fkl * ~head).sum(-1).mean()),
            "rkl_head": float((rkl * head).sum(-1).mean()), "rkl_tail": float((rkl * ~head).sum(-1).mean())}


def expected_calibration_error(log_p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE of top-1 predictions: sum over equal-width confidence bins of |accuracy - confidence| times the bin's
    share of rows."""
    conf, pred = log_p.exp().max(-1)
    right = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += float(inside.float().mean() * (right[inside].mean() - conf[inside].mean()).abs())
    return ece


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, grid: torch.Tensor | None = None) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on (logits, y): the one-parameter calibration
    of a teacher, fitted on held-out data. A grid search (log-spaced, 0.5..3), robust and exact enough for one
    parameter."""
    grid = grid if grid is not None else torch.logspace(math.log10(0.5), math.log10(3.0), 41)
    nll = torch.stack([F.cross_entropy(logits.float() / t, y) for t in grid])
    return float(grid[nll.argmin()])


@torch.no_grad()
def teacher_diagnostics(student: nn.Module, teacher: nn.Module, data, context: int, k: int = 5,
                        windows: int = 16, seed: int = 99) -> dict:
    """What "Distillation Traps and Guards" asks to watch, on held-out text (kd_protocol.md §B): the teacher's
    mass outside its top-k and the KLs split into head and tail; the teacher's ECE; and the teacher's top-1
    confidence and entropy at data prefixes against prefixes the student wrote (half a context each)."""
    from kdcompile.lm import sample_continuations

    gen = torch.Generator().manual_seed(seed)
    chunk = data.batch("test", windows, context, gen)
    x, y = chunk[:, :-1], chunk[:, 1:]
    log_p = F.log_softmax(teacher(x).float(), -1).flatten(0, 1)
    log_q = F.log_softmax(student(x).float(), -1).flatten(0, 1)
    half = context // 2
    written = sample_continuations(student, x[:, :half], context - half, gen)  # (windows, context)
    log_p_w = F.log_softmax(teacher(written).float(), -1)[:, half:].flatten(0, 1)  # at student-written prefixes
    log_p_d = log_p.view(windows, context, -1)[:, half:].flatten(0, 1)  # the same positions, data prefixes

    def confidence(lp: torch.Tensor) -> dict:
        return {"top1": float(lp.exp().max(-1).values.mean()), "entropy": float(-(lp.exp() * lp).sum(-1).mean())}
    return {**head_tail_kl(log_p, log_q, k), "k": k, "teacher_ece": expected_calibration_error(log_p, y.flatten()),
            "teacher_on_data_prefixes": confidence(log_p_d), "teacher_on_student_prefixes": confidence(log_p_w)}
