"""Stage 1 for a Hugging Face teacher (a transformers folder or a GGUF file): a depth student cut from it, distilled
on text tokenised with the teacher's own tokenizer, saved as a Hugging Face folder and as the one-input graph the
later stages export, tune and time.

Students (--student): "depth:K" keeps K layers picked evenly (the first and the last included), no spec keeps
layers 0, 2, 4, ... as DistilBERT does; "mlp:N" keeps the N most important hidden units of every MLP (width), and
"depth:K,mlp:N" does both. The weights are the teacher's (kdcompile.hf.depth_student, narrow_mlp).

Losses (DistillConfig.loss):
- encoders: "minilm" (default) = MiniLM's last-layer attention and value-relation transfer + the embedding cosine;
  "hidden" = hidden-state hints (student layer i against teacher layer round(i N / M), TinyBERT's uniform map)
  + the embedding cosine; "embed" = the embedding cosine alone (sentence-transformers' distillation target).
- causal LMs: the token-level losses of kdcompile.losses ("fkl" default, "rkl", "skl", "srkl", "gjsd", "tvd") at
  temperature 1 over every real position, "hpd" (with one student-sampled token per position) and "tip" (reverse
  KL on the positions TIP selects); "ce" trains on the next token alone (the control without a teacher). With
  --on-policy S, a share S of the batches has its second half written by the student (on_policy_batches), and
  the loss counts those positions only.

Files: student_hf/ (save_pretrained, with the tokenizer and, for a sentence-transformers teacher, its pooling
modules), student.pt2 (the graph: token ids (b, seq_len) -> embeddings or logits), run.json (its "hf" and "input"
entries say so), distill.json. Training resumes from distill_state.pt like the other students.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kdcompile import parallel
from kdcompile.encoder_kd import attention_kl, cosine_distance, hidden_mse, value_relation_kl
from kdcompile.errors import KdError
from kdcompile.hf import HFModel, Pooling, depth_student, graph, narrow_mlp, pad_id, pool
from kdcompile.losses import LOSSES, hpd, reverse_kl, tip_select
from kdcompile.progress import console
from kdcompile.rundir import RunDir
from kdcompile.text import text_source, training_text

ENCODER_LOSSES = ("minilm", "hidden", "embed")
LM_LOSSES = ("fkl", "rkl", "skl", "srkl", "gjsd", "tvd", "hpd", "tip", "ce")
DEFAULT_LOSS = {"encoder": "minilm", "causal_lm": "fkl"}
DEFAULT_TEXT = "pydoc"
DEFAULT_SEQ_LEN = 128
# AdamW peak learning rate of a student initialised from pretrained layers. Encoders: all-MiniLM-L6-v2's 3-layer
# student, 4 epochs of lee sentences, reached a held-out cosine of 0.819 at 1e-3 against 0.723 at 1e-4
# (bench/results/real/minilm.json). Causal LMs: SmolLM2's quarter-size student did about 1 nat better at 1e-3
# than at 1e-4 (bench/results/real/smollm2.json, one seed per rate): not yet enough to move this default.
HF_LR = {"encoder": 1e-3, "causal_lm": 1e-4}
# Sequences per batch unless --batch-size says otherwise: a causal LM's logits are (b, l, vocab) for teacher and
# student, 8 x 128 x 49,152 fp32 = 200 MB each for SmolLM2, several times over in the loss's intermediates.
HF_BATCH = {"encoder": 32, "causal_lm": 8}
STUDENT_FOLDER = "student_hf"
PARITY_IDS = 64  # held-out sequences kept in the run folder for export's and tune's parity checks


def kept_layers(n: int, student: str | None) -> list[int]:
    """The teacher layers a depth student keeps: every other one by default, or K spread evenly over 0..n-1."""
    return student_plan(n, 1, student)[0]


def student_plan(n: int, mlp: int, student: str | None) -> tuple[list[int], int | None]:
    """What --student asks of a teacher with n layers and MLPs of `mlp` hidden units: the layers kept and the MLP
    width (None: unchanged). The spec is comma-separated parts, "depth:K" (K layers spread evenly, the first and
    the last kept) and "mlp:N" (N hidden units per MLP, the most important ones); no spec keeps every other layer
    (DistilBERT), a spec without a depth part keeps every layer."""
    if student is None:
        return list(range(0, n, 2)), None
    usage = (f"A Hugging Face teacher takes --student depth:K, mlp:N or both (depth:K,mlp:N): K of its {n} layers, "
             f"N of its {mlp} MLP units")
    parts = {}
    for part in student.split(","):
        key, _, value = part.strip().partition(":")
        if key not in ("depth", "mlp") or key in parts or not value.strip().isdigit():
            raise KdError(f"{usage}; '{student}' is not one of those.")
        parts[key] = int(value)
    k, width = parts.get("depth", n), parts.get("mlp")
    if not 1 <= k <= n:
        raise KdError(f"--student depth:K needs K between 1 and the teacher's {n} layers, got '{student}'.")
    if width is not None and not 1 <= width <= mlp:
        raise KdError(f"--student mlp:N needs N between 1 and the teacher's {mlp} MLP units, got '{student}'.")
    kept = [round(i * (n - 1) / (k - 1)) for i in range(k)] if k > 1 else [n - 1]
    return kept, width


class EncoderOut(NamedTuple):
    embedding: torch.Tensor  # (b, d)
    hidden: tuple[torch.Tensor, ...]  # (b, l, d) per layer, embeddings first
    attention: torch.Tensor  # (b, h, l, l), last layer
    values: torch.Tensor | None  # (b, l, d), last layer's value projection
    mask: torch.Tensor  # (b, l) bool, real tokens


def _value_module(model: nn.Module) -> nn.Module:
    """The last layer's value projection (BERT family: attention.self.value)."""
    from kdcompile.hf import _layer_stack

    last = _layer_stack(model)[1][-1]
    found = [m for name, m in last.named_modules() if name.endswith(("self.value", "v_proj"))]
    if len(found) != 1:
        raise KdError(f"The value projection of {type(model).__name__}'s last layer was not found; use --loss hidden "
                      "or embed.")
    return found[0]


class EncoderForKD(nn.Module):
    """An encoder as the losses read it. Columns that are padding in every row are dropped first (the result is
    the same: padded keys are masked and positions count from the start)."""

    def __init__(self, model: nn.Module, pooling: Pooling, pad: int, values: bool):
        super().__init__()
        self.model, self.pooling, self.pad = model, pooling, pad
        self._values = None
        if values:
            _value_module(model).register_forward_hook(lambda _m, _i, out: setattr(self, "_values", out))

    def forward(self, ids: torch.Tensor) -> EncoderOut:
        mask = ids != self.pad
        longest = int(mask.sum(1).max())
        ids, mask = ids[:, :longest], mask[:, :longest]
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True,
                         output_attentions=True)
        e = pool(out.last_hidden_state, mask, self.pooling)
        return EncoderOut(e, out.hidden_states, out.attentions[-1], self._values, mask)


def encoder_loss(method: str, heads: int):
    """loss(student_out, teacher_out) of an encoder method."""
    def loss(s: EncoderOut, t: EncoderOut) -> torch.Tensor:
        total = cosine_distance(s.embedding, t.embedding)
        if method == "minilm":
            total = total + attention_kl(s.attention, t.attention, s.mask) \
                + value_relation_kl(s.values, t.values, heads, s.mask)
        elif method == "hidden":
            m, n = len(s.hidden) - 1, len(t.hidden) - 1
            total = total + sum(hidden_mse(s.hidden[i], t.hidden[round(i * n / m)], s.mask)
                                for i in range(m + 1)) / (m + 1)
        return total
    return loss


def lm_loss(method: str, pad: int, generator: torch.Generator | None = None):
    """loss(student_logits, teacher_logits, ids) of a causal LM method, over positions whose next token is real.
    "hpd" samples one token per position from the student (`generator`); "tip" trains on the half of the
    positions TIP's selection keeps (kdcompile.losses.tip_select: our reading of its score), with reverse KL."""
    def loss(z_s: torch.Tensor, z_t: torch.Tensor | None, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """`start`: the first position whose next token counts (an on-policy batch counts the student's own)."""
        z_s = z_s[:, start:-1].flatten(0, 1)  # (b (l - 1), v): position t predicts token t + 1
        target = ids[:, start + 1:].flatten()
        if method == "ce":
            return F.cross_entropy(z_s, target)
        z_t, mask = z_t[:, start:-1].flatten(0, 1), target != pad if pad >= 0 else None
        if method == "hpd":
            y_hat = torch.multinomial(torch.softmax(z_s.detach().float(), -1), 1, generator=generator)[:, 0]
            return hpd(z_s, z_t, target, y_hat, mask=mask)
        if method == "tip":
            keep = tip_select(z_s, z_t, mask=mask)
            return reverse_kl(z_s[keep], z_t[keep])
        return LOSSES[method](z_s, z_t, mask=mask)
    return loss


def on_policy_batches(student: nn.Module, share: float, gen: torch.Generator, written: dict):
    """prepare(ids) for fit: with probability `share`, the student writes the second half of every sequence from
    the first (sampled at temperature 1 with its KV cache, transformers' generate), and `written["start"]` tells the
    loss to count only those positions (GKD's on-policy distillation); else the batch stays data."""
    def prepare(ids: torch.Tensor) -> torch.Tensor:
        written["start"] = 0
        if torch.rand((), generator=gen).item() >= share:
            return ids
        half = ids.shape[1] // 2
        was_training = student.training
        student.eval()
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))  # generate samples from torch's RNG
        with torch.no_grad():
            seq = student.generate(ids[:, :half], attention_mask=torch.ones_like(ids[:, :half]), do_sample=True,
                                   top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=ids.shape[1] - half,
                                   min_new_tokens=ids.shape[1] - half, pad_token_id=0)
        student.train(was_training)
        written["start"] = half - 1  # position half - 1 predicts the first written token
        return seq[:, :ids.shape[1]]
    return prepare


def _checked_loss(kind: str, method: str) -> str:
    allowed = ENCODER_LOSSES if kind == "encoder" else LM_LOSSES
    if method not in allowed:
        what = "an encoder" if kind == "encoder" else "a causal LM"
        raise KdError(f"--loss {method} does not apply to {what}: choose one of {', '.join(allowed)}.")
    return method


def resolved(cfg, kind: str):
    """`cfg` with the Hugging Face defaults filled in: the loss for the model kind, the text and sequence length."""
    from dataclasses import replace

    loss = DEFAULT_LOSS[kind] if cfg.loss in (None, "hinton") else cfg.loss
    if cfg.on_policy is not None and (kind != "causal_lm" or not 0.0 <= cfg.on_policy <= 1.0):
        raise KdError("--on-policy is the share (0 to 1) of batches a causal-LM student writes itself; "
                      f"got {cfg.on_policy} for {'an encoder' if kind == 'encoder' else 'a causal LM'}.")
    return replace(cfg, loss=_checked_loss(kind, loss), data=cfg.data or DEFAULT_TEXT,
                   seq_len=cfg.seq_len or DEFAULT_SEQ_LEN, lr=cfg.lr or HF_LR[kind],
                   batch_size=cfg.batch_size or HF_BATCH[kind])


def _eager(model: nn.Module) -> nn.Module:
    """The model with eager attention, which returns attention probabilities (SDPA does not)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    return model


@torch.no_grad()
def _graph_outputs(g: nn.Module, ids: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([g(ids[i:i + batch]) for i in range(0, len(ids), batch)])


def encoder_metrics(student: nn.Module, teacher: nn.Module, ids: torch.Tensor) -> dict:
    """On held-out sentences: mean cosine between student and teacher embeddings, and nearest-neighbour agreement
    (the share of sentences whose nearest other sentence is the same under both models' embeddings)."""
    e_s, e_t = (F.normalize(_graph_outputs(g, ids), dim=-1) for g in (student, teacher))
    eye = torch.eye(len(ids), dtype=torch.bool)
    nn_s, nn_t = ((e @ e.T).masked_fill(eye, -2).argmax(1) for e in (e_s, e_t))
    return {"cosine": float(F.cosine_similarity(e_s, e_t).mean()), "nn_agreement": float((nn_s == nn_t).float().mean()),
            "heldout_sentences": len(ids)}


def lm_metrics(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, pad: int) -> dict:
    """On held-out blocks: NLL of the next token (nats), KL(teacher || student) and top-1 agreement per position."""
    nll = kl = agree = n = 0.0
    with torch.no_grad():
        for i in range(0, len(ids), 8):
            x = ids[i:i + 8]
            z_s, z_t = student(x)[:, :-1].flatten(0, 1), teacher(x)[:, :-1].flatten(0, 1)
            y = x[:, 1:].flatten()
            nll += float(F.cross_entropy(z_s, y, reduction="sum"))
            kl += float(F.kl_div(z_s.log_softmax(-1), z_t.log_softmax(-1), log_target=True, reduction="sum"))
            agree += float((z_s.argmax(-1) == z_t.argmax(-1)).sum())
            n += len(y)
    return {"nll": nll / n, "kl_to_teacher": kl / n, "agreement": agree / n, "heldout_tokens": int(n)}


def _save_folder(hf: HFModel, student: nn.Module, teacher_path: Path, out: Path) -> None:
    """A Hugging Face folder of the student (loadable by transformers), with the teacher's tokenizer; for a
    sentence-transformers teacher, its modules.json and pooling config too, so the folder loads the same way."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.save_pretrained(str(tmp))
    if hf.tokenizer is not None:
        hf.tokenizer.save_pretrained(str(tmp))
    if hf.pooling is not None and (teacher_path / "modules.json").is_file():
        modules = json.loads((teacher_path / "modules.json").read_text())
        for m in modules:
            if m["type"].endswith("Transformer"):
                m["path"] = ""
            elif (teacher_path / m["path"]).is_dir():
                shutil.copytree(teacher_path / m["path"], tmp / m["path"])
        (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def distill_hf(spec, hf: HFModel, run: RunDir, cfg, identity: dict, force: bool) -> dict:
    """Distil a depth student of a Hugging Face teacher; returns distill.json's content. `cfg` is `resolved`."""
    from kdcompile.distill import check_kept, compiled_flops_and_params, save_student
    from kdcompile.hf import _layer_stack
    from kdcompile.train import fit

    if hf.tokenizer is None:
        raise KdError(f"{spec.path} has no tokenizer files (tokenizer.json, vocab.txt, ...): kdcompile tokenises the "
                      "distillation text with the teacher's own tokenizer.")
    pad = pad_id(hf)
    train_ids, test_ids = training_text(hf.tokenizer, cfg.data, hf.kind, cfg.seq_len, pad)
    n_layers = len(_layer_stack(hf.model)[1])
    full_mlp = int(getattr(hf.model.config, "intermediate_size", 0) or 0)
    kept, width = student_plan(n_layers, full_mlp, cfg.student)
    student = depth_student(hf.model, kept)
    if width is not None:
        student = narrow_mlp(student, width)
    teacher_graph = graph(hf)
    prepare = None  # the on-policy rewrite of a causal LM's batches, when asked
    if hf.kind == "encoder":
        pooling = hf.pooling or Pooling("mean")
        heads = hf.model.config.num_attention_heads
        t_kd = EncoderForKD(_eager(depth_student(hf.model, range(n_layers))), pooling, pad, cfg.loss == "minilm")
        s_kd = EncoderForKD(_eager(student), pooling, pad, cfg.loss == "minilm")
        kd = encoder_loss(cfg.loss, heads)

        def loss_fn(out: EncoderOut, ids: torch.Tensor, _y) -> torch.Tensor:
            with torch.no_grad():
                t_out = t_kd.eval()(ids)
            return kd(out, t_out)
        model = s_kd
    else:
        gen = torch.Generator().manual_seed(cfg.seed)
        kd = lm_loss(cfg.loss, pad, gen)
        model = graph(HFModel(student, hf.kind))
        written = {"start": 0}  # where the student's own tokens begin in the current batch (0: data only)
        # `gen` is not in the checkpoint: a resumed on-policy run samples other continuations than an unbroken one

        def loss_fn(z_s: torch.Tensor, ids: torch.Tensor, _y) -> torch.Tensor:
            with torch.no_grad():
                z_t = None if cfg.loss == "ce" else teacher_graph(ids)
            return kd(z_s, z_t, ids, written["start"])
        prepare = on_policy_batches(student, cfg.on_policy or 0.0, gen, written) if cfg.on_policy else None
    fit(model, train_ids, None, loss_fn, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
        description=f"distill ({cfg.loss})", checkpoint=run.root / "distill_state.pt",
        resume=False if force else None, identity=identity, prepare=prepare)
    if not parallel.is_main():  # torchrun: rank 0 evaluates and writes the student
        return {}

    if hasattr(student, "set_attn_implementation"):  # export and time it as the teacher runs
        student.set_attn_implementation(hf.model.config._attn_implementation)
    student.eval()
    student_graph = graph(HFModel(student, hf.kind, hf.tokenizer, hf.pooling))
    metrics = encoder_metrics(student_graph, teacher_graph, test_ids) if hf.kind == "encoder" else \
        lm_metrics(student_graph, teacher_graph, test_ids, pad)
    example = torch.full((1, cfg.seq_len), pad, dtype=torch.long)
    example[0, :min(8, cfg.seq_len)] = test_ids[0, :min(8, cfg.seq_len)]
    t_flops, t_params = compiled_flops_and_params(teacher_graph, example)
    s_flops, s_params = compiled_flops_and_params(student_graph, example)
    agreement = metrics["nn_agreement"] if hf.kind == "encoder" else metrics["agreement"]
    kept_metric = {"metric": "cosine", "share": metrics["cosine"]} if hf.kind == "encoder" else \
        {"metric": "agreement", "share": metrics["agreement"]}
    result = {
        "dataset": cfg.data,
        "teacher": {"accuracy": None, "flops": t_flops, "parameters": t_params, "kind": "hf_" + hf.kind,
                    "layers": n_layers},
        "student": {"accuracy": None, "flops": s_flops, "parameters": s_params, "agreement": agreement,
                    "layers": len(kept), "kept_layers": kept, "built_by": f"depth: teacher layers {kept}"
                    + (f"; MLP {width} of {full_mlp} units (magnitude)" if width else ""), "mlp_units": width or full_mlp,
                    **metrics},
        "config": asdict(cfg), "teacher_sha256": identity["teacher_sha256"], "identity": identity,
        "kept": kept_metric | {"threshold": cfg.min_kept},
        "sequence_length": cfg.seq_len,
    }
    run.root.mkdir(parents=True, exist_ok=True)
    _save_folder(hf, student, Path(spec.path), run.root / STUDENT_FOLDER)
    teacher_spec = asdict(spec) | {"path": str(Path(spec.path).resolve()), "input_shape": [1, cfg.seq_len]}
    run.write_json("run.json", {
        "teacher": teacher_spec, "dataset": cfg.data, "data": text_source(cfg.data),
        "hf": {"kind": hf.kind, "pad_id": pad, "seq_len": cfg.seq_len},
        "input": {"dtype": "int64", "high": int(hf.model.config.vocab_size)}})
    save_student(student_graph, example, run.student)
    import numpy as np

    from kdcompile.export import HELDOUT_IDS
    from kdcompile.files import atomic_path

    with atomic_path(run.root / HELDOUT_IDS) as tmp:  # the parity inputs of export and tune
        np.save(tmp, test_ids[:PARITY_IDS].numpy())
    run.write_json("distill.json", result)
    shown = f"cosine to the teacher {metrics['cosine']:.4f}, nearest-neighbour agreement " \
            f"{metrics['nn_agreement']:.3f}" if hf.kind == "encoder" else \
            f"held-out NLL {metrics['nll']:.3f}, KL to the teacher {metrics['kl_to_teacher']:.3f}"
    console.print(f"student: {len(kept)} of {n_layers} layers, {s_params / 1e6:.2f} M parameters, "
                  f"{(s_flops or 0) / 1e9:.2f} GFLOPs per sequence of {cfg.seq_len}"
                  + (f" ({t_flops / s_flops:.1f}x fewer)" if t_flops and s_flops else "") + f"; {shown}")
    check_kept(result, cfg.min_kept, run.root)
    return result
