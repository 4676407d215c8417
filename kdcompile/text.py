"""Text to distil Hugging Face models on, tokenised with the teacher's own tokenizer: English that ships offline, or
the user's text files.

- "pydoc": CPython's pydoc topics (about 465k characters; stdlib, always present);
- "lee": gensim's lee_background.cor, 300 ABC news documents (pip install --no-deps gensim);
- a .txt file, or a folder of them (read in name order).

An encoder trains on sentences, a causal LM on contiguous token blocks. The split is fixed: every tenth unit
(sentence or block) is held out, so held-out figures of different runs compare.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from kdcompile.errors import KdError

HELDOUT_EVERY = 10
MIN_WORDS = 4  # shorter "sentences" in these corpora are headings and code fragments


def _pydoc() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _lee() -> str:
    from kdcompile.data import package_file

    return package_file("gensim", "test", "test_data", "lee_background.cor").read_text("utf-8")


BUILTIN = {"pydoc": _pydoc, "lee": _lee}


def _files(path: Path) -> list[Path]:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise KdError(f"{path} holds no .txt files to distil on.")
    return files


def read_text(name_or_path: str) -> str:
    """The whole text of a built-in corpus or of the user's file(s)."""
    from kdcompile.data import BUILTIN as IMAGES

    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]()
    if name_or_path in IMAGES:
        raise KdError(f"'{name_or_path}' is image data; a Hugging Face teacher distils on text: {' or '.join(BUILTIN)}, "
                      "a .txt file or a folder of them.")
    path = Path(name_or_path)
    if not path.exists():
        raise KdError(f"Unknown text '{name_or_path}': use {' or '.join(BUILTIN)}, a .txt file or a folder of them.")
    try:
        return "\n\n".join(f.read_text("utf-8") for f in _files(path))
    except UnicodeDecodeError as e:
        raise KdError(f"{name_or_path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None


def text_source(name_or_path: str) -> dict:
    """{"source", "sha256"} as run.json keeps it (kdcompile.data.data_source's rule); text files only."""
    from kdcompile.data import data_source

    if name_or_path in BUILTIN:
        return {"source": name_or_path, "sha256": None}
    read_text(name_or_path)  # a clear sentence for a missing or unreadable file
    return data_source(name_or_path)


def split(units: list) -> tuple[list, list]:
    """(train, held-out): every HELDOUT_EVERY-th unit is held out."""
    test = units[HELDOUT_EVERY - 1::HELDOUT_EVERY]
    train = [u for i, u in enumerate(units) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    return train, test


def sentences(text: str) -> list[str]:
    """Sentences of at least MIN_WORDS words, whitespace collapsed."""
    flat = re.sub(r"\s+", " ", text)
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", flat)
    return [p.strip() for p in parts if len(p.split()) >= MIN_WORDS]


def sentence_ids(tokenizer, texts: list[str], seq_len: int, pad_id: int) -> torch.Tensor:
    """(n, seq_len) int64 token ids, truncated to seq_len and padded with `pad_id` at the end."""
    rows = tokenizer(texts, truncation=True, max_length=seq_len, add_special_tokens=True)["input_ids"]
    out = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def token_blocks(tokenizer, text: str, seq_len: int) -> torch.Tensor:
    """(n, seq_len) int64: the text's tokens cut into contiguous blocks (the tail that does not fill one is
    dropped)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = len(ids) // seq_len
    if n < 2 * HELDOUT_EVERY:
        raise KdError(f"The text has {len(ids)} tokens, too few for {2 * HELDOUT_EVERY} blocks of {seq_len}: give more "
                      "text or a shorter --seq-len.")
    return torch.tensor(ids[:n * seq_len], dtype=torch.long).view(n, seq_len)


def training_text(tokenizer, name_or_path: str, kind: str, seq_len: int, pad_id: int) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """(train, held-out) token ids for an encoder (sentences) or a causal LM (blocks)."""
    text = read_text(name_or_path)
    if kind == "encoder":
        units = sentences(text)
        if len(units) < 2 * HELDOUT_EVERY:
            raise KdError(f"{name_or_path} has {len(units)} sentences of {MIN_WORDS}+ words; distillation needs at "
                          f"least {2 * HELDOUT_EVERY}.")
        train, test = split(units)
        return sentence_ids(tokenizer, train, seq_len, pad_id), sentence_ids(tokenizer, test, seq_len, pad_id)
    blocks = token_blocks(tokenizer, text, seq_len)
    idx = torch.arange(len(blocks))
    held = idx % HELDOUT_EVERY == HELDOUT_EVERY - 1
    return blocks[~held], blocks[held]
