"""A small causal character language model, its data (English text that ships with CPython), and sampling.

Glossary: b batch, l length (characters), d model width, h heads, v vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdcompile.errors import KdError


@dataclass
class CharData:
    """Text as character ids; the last `heldout_fraction` of the text is held out (a fixed split)."""

    vocab: str
    train: torch.Tensor  # (n,) int64
    test: torch.Tensor

    def batch(self, split: str, b: int, l: int, gen: torch.Generator) -> torch.Tensor:
        """(b, l + 1) random windows: inputs are [:, :-1], next-character targets [:, 1:]."""
        data = self.train if split == "train" else self.test
        starts = torch.randint(0, len(data) - l - 1, (b,), generator=gen)
        return torch.stack([data[s:s + l + 1] for s in starts.tolist()])

    def validation(self, fraction: float = 0.05) -> "CharData":
        """The training text split again: its last `fraction` becomes the held-out part. Choices (a learning
        rate, a temperature) are made on it, so the real held-out text is looked at once."""
        cut = int(len(self.train) * (1 - fraction))
        return CharData(self.vocab, self.train[:cut], self.train[cut:])


def _encode(text: str, vocab: str | None = None, heldout_fraction: float = 0.1) -> CharData:
    vocab = vocab or "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)
    cut = int(len(ids) * (1 - heldout_fraction))
    return CharData(vocab, ids[:cut], ids[cut:])


def pydoc_text() -> CharData:
    """CPython's pydoc topics (about 465k characters of English; stdlib, so always present)."""
    from pydoc_data.topics import topics

    return _encode("\n\n".join(topics[k] for k in sorted(topics)))


def text_file(path: Path, vocab: str | None = None) -> CharData:
    text = Path(path).read_text(errors="replace")
    if len(text) < 1000:
        raise KdError(f"{path} has {len(text)} characters; a character model needs at least 1,000.")
    return _encode(text, vocab)


class Block(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, l, d)
        b, l, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, l, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)  # (b, h, l, d/h)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, l, d))
        return x + self.mlp(self.ln2(x))


class CharLM(nn.Module):
    """A GPT-style decoder: token + position embeddings, pre-norm blocks, tied output head."""

    def __init__(self, vocab: int, d: int = 128, heads: int = 4, layers: int = 4, context: int = 128):
        super().__init__()
        self.context = context
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (b, l) -> logits (b, l, v)
        l = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(l, device=idx.device))
        return self.ln_f(self.blocks(x)) @ self.tok.weight.t()


def char_lm(vocab: int, d: int = 128, heads: int = 4, layers: int = 4, context: int = 128) -> CharLM:
    return CharLM(vocab, d, heads, layers, context)


@torch.no_grad()
def sample_continuations(model: nn.Module, prompts: torch.Tensor, new_tokens: int, gen: torch.Generator,
                         temperature: float = 1.0, teacher: nn.Module | None = None,
                         teacher_mix: float = 0.0) -> torch.Tensor:
    """Extend prompts (b, l0) by `new_tokens` characters sampled from `model`: (b, l0 + new_tokens). With
    `teacher` and `teacher_mix` m > 0, each character is drawn from (1 - m) p_model + m p_teacher (teacher-mixed
    sampling: the student's prefixes stay near text the teacher finds likely)."""
    seq = prompts
    for _ in range(new_tokens):
        window = seq[:, -model.context:]
        probs = torch.softmax(model(window)[:, -1].float() / temperature, -1)
        if teacher is not None and teacher_mix:
            probs = (1 - teacher_mix) * probs + teacher_mix * torch.softmax(teacher(window)[:, -1].float()
                                                                            / temperature, -1)
        nxt = torch.multinomial(probs, 1, generator=gen)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


@torch.no_grad()
def evaluate_lm(student: nn.Module, teacher: nn.Module | None, data: CharData, context: int,
                batches: int = 20, batch_size: int = 32, seed: int = 1234) -> dict:
    """Held-out NLL per character (nats), KL(teacher || student) and KL(student || teacher) per character, on
    fixed random windows."""
    gen = torch.Generator().manual_seed(seed)
    nll = kl = rkl = 0.0
    student.eval()
    for _ in range(batches):
        chunk = data.batch("test", batch_size, context, gen)
        x, y = chunk[:, :-1], chunk[:, 1:]
        log_q = F.log_softmax(student(x).float(), -1)
        nll += F.nll_loss(log_q.flatten(0, 1), y.flatten()).item()
        if teacher is not None:
            log_p = F.log_softmax(teacher(x).float(), -1)
            kl += (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
            rkl += (log_q.exp() * (log_q - log_p)).sum(-1).mean().item()
    return {"nll": nll / batches, "bits_per_char": nll / batches / math.log(2),
            "kl_to_teacher": kl / batches if teacher is not None else None,
            "reverse_kl_to_teacher": rkl / batches if teacher is not None else None}
