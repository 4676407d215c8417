"""Hugging Face teachers: a transformers folder (BERT-family encoder or LLaMA-family causal LM, a
sentence-transformers folder included) or a GGUF file, loaded offline in float32; and depth and width students cut from them.

Nothing is downloaded and no code shipped with a model is run: transformers builds the model from its own classes,
with the hub switched off. transformers is imported only here and only inside functions, so `import kdcompile` and
`import kdcompile.load` stay light. Glossary: b batch, l length (tokens), d model width.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdcompile.errors import KdError
from kdcompile.progress import quiet

ModelKind = Literal["encoder", "causal_lm"]
WEIGHTS = ("*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")
INSTALL = "pip install 'kdcompile[hf]' (in a checkout: pip install -e '.[hf]')"
# sentence-transformers' pooling flags (1_Pooling/config.json) and the two kdcompile computes.
POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass
class Pooling:
    """How a sentence-transformers model turns token states into one embedding."""

    mode: Literal["mean", "cls"]
    normalize: bool = False  # a Normalize module follows: embeddings have unit L2 norm


@dataclass
class HFModel:
    """A transformers model in eval mode and what running it needs."""

    model: nn.Module  # a transformers PreTrainedModel
    kind: ModelKind
    tokenizer: object | None = None  # a transformers tokenizer, when the folder or file has one
    pooling: Pooling | None = None  # sentence-transformers folders only


def _transformers(gguf: bool = False):
    """The transformers package, with the hub off: kdcompile never downloads at run time. The variables cover a
    hub client imported later; every call below also passes local_files_only=True, which holds either way."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    needed = ("transformers", "safetensors", "tokenizers") + (("gguf", "accelerate") if gguf else ())
    try:
        for name in needed:
            __import__(name)
    except ImportError as e:
        what = "a GGUF file" if gguf else "a Hugging Face model"
        raise KdError(f"Loading {what} needs {', '.join(needed)} ({e.name} is missing): {INSTALL}.") from e
    import transformers

    transformers.logging.set_verbosity_error()  # unused-weight notes on every AutoModel load of a *ForMaskedLM
    if quiet():  # the same rule as kdcompile's own bars
        transformers.logging.disable_progress_bar()
    return transformers


def _has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in WEIGHTS)


def _sentence_transformer(path: Path) -> tuple[Path, Pooling] | None:
    """(transformer folder, pooling) of a sentence-transformers folder (modules.json), or None for any other."""
    if not (path / "modules.json").is_file():
        return None
    try:
        modules = json.loads((path / "modules.json").read_text())
        by_type = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
        transformer, pool = by_type["Transformer"], by_type["Pooling"]
        flags = json.loads((path / pool["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KdError(f"{path} has a modules.json but not a readable Transformer and Pooling module "
                      f"(sentence-transformers layout): {type(e).__name__} {e}.") from e
    modes = [name for flag, name in POOLING_FLAGS.items() if flags.get(flag)]
    if modes not in (["mean"], ["cls"]):
        raise KdError(f"{path} pools token states by {'+'.join(modes) or 'nothing'}; kdcompile computes mean or "
                      "cls pooling.")
    return path / transformer.get("path", ""), Pooling(modes[0], "Normalize" in by_type)


def is_hf_folder(path: str | Path) -> bool:
    """A folder with config.json and weights (*.safetensors or pytorch_model.bin), or a sentence-transformers
    folder whose transformer module is one."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        found = _sentence_transformer(path)
    except KdError:
        return True  # a sentence-transformers folder, if a broken one: load_hf says what is wrong with it
    root = found[0] if found else path
    return (root / "config.json").is_file() and _has_weights(root)


def is_gguf(path: str | Path) -> bool:
    """A file that starts with the GGUF magic."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == b"GGUF"


def config_kind(path: str | Path) -> ModelKind:
    """What a Hugging Face folder or GGUF file holds, from its config alone (no weights are read)."""
    path = Path(path)
    if is_gguf(path):
        kind = model_kind(_config(path.parent, path, gguf_file=path.name))
    else:
        found = _sentence_transformer(path)
        kind = "encoder" if found else model_kind(_config(path, path))
    if kind is None:
        raise KdError(f"{path} holds neither a BERT-family encoder nor a causal LM (LLaMA family), which is what "
                      "kdcompile distils.")
    return kind


def model_kind(config) -> ModelKind | None:
    """What a config describes: "causal_lm" for a *ForCausalLM (or *LMHeadModel) or a decoder-only model type,
    "encoder" for a BERT-family model type (one with a masked-LM head and no decoder), None for anything else."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or ()):
        return "causal_lm"
    if getattr(config, "is_encoder_decoder", False):
        return None
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    return "causal_lm" if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else None


def _first_line(e: Exception) -> str:
    """The first sentence of a library's message, which says what it could not do (the rest guesses why)."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.split(r"(?<=\.)\s", line)[0][:300]


def _config(folder: Path, path: Path, **kwargs):
    transformers = _transformers(gguf="gguf_file" in kwargs)
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (ValueError, KeyError, OSError) as e:  # unknown model type, code shipped in the folder, bad JSON
        if "gguf_file" in kwargs:
            raise KdError(f"{path} starts like a GGUF file, but transformers' GGUF reader cannot read its header "
                          f"(damaged, or an architecture it does not know): {_first_line(e)}") from e
        raise KdError(f"{path} holds a model that transformers {transformers.__version__} cannot build offline "
                      f"from its own code (kdcompile neither downloads model code nor runs code from the folder): "
                      f"{_first_line(e)}") from e


def _tokenizer(folder: Path, path: Path, **kwargs):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - a tokenizer's readers raise many types for a file they cannot use
        raise KdError(f"The tokenizer of {path} cannot be read: {_first_line(e)}") from e


def load_hf(path: str | Path) -> HFModel:
    """A Hugging Face folder as a float32 model in eval mode, with its tokenizer and, for a sentence-transformers
    folder, its pooling. Encoders load with AutoModel (token states), causal LMs with AutoModelForCausalLM."""
    path = Path(path)
    found = _sentence_transformer(path)
    folder, pooling = found if found else (path, None)
    if not (folder / "config.json").is_file():
        raise KdError(f"{folder} has no config.json, so it is not a Hugging Face model folder.")
    if not _has_weights(folder):
        raise KdError(f"{folder} has a config.json but no weights (model.safetensors or pytorch_model.bin).")
    config = _config(folder, path)
    kind = "encoder" if pooling else model_kind(config)
    if kind is None:
        raise KdError(f"{path} is a '{config.model_type}' model ({', '.join(config.architectures or ['no class'])}); "
                      "kdcompile loads BERT-family encoders and causal LMs (LLaMA family).")
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if kind == "causal_lm" else AutoModel
    try:
        model = auto.from_pretrained(str(folder), config=config, dtype=torch.float32, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - safetensors, torch.load and the loader raise many types for bad weights
        raise KdError(f"The weights in {folder} do not load into {auto.__name__}: {_first_line(e)}") from e
    has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
    return HFModel(model.eval(), kind, _tokenizer(folder, path) if has_tokenizer else None, pooling)


def load_gguf(path: str | Path) -> HFModel:
    """A causal LM GGUF file, dequantised to float32 through transformers' GGUF support, with its tokenizer."""
    path = Path(path)
    if not path.is_file():
        raise KdError(f"No such file: {path}.")
    if not is_gguf(path):
        raise KdError(f"{path} is not a GGUF file (it does not start with the GGUF magic).")
    folder, name = path.parent, path.name
    config = _config(folder, path, gguf_file=name)
    if model_kind(config) != "causal_lm":
        raise KdError(f"{path} holds a '{config.model_type}' model, not a causal LM; kdcompile loads causal LMs from "
                      "GGUF files (give an encoder as its Hugging Face folder).")
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, GgufConfig

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=name, config=config, dtype=torch.float32, local_files_only=True,
            quantization_config=GgufConfig(dequantize=True))  # plain float32 weights, not packed GGUF blocks
    except Exception as e:  # noqa: BLE001 - the GGUF reader and the loader raise many types for bad tensors
        raise KdError(f"The tensors in {path} do not load into a '{config.model_type}' causal LM: "
                      f"{_first_line(e)}") from e
    has_tokenizer = "tokenizer.ggml.tokens" in GGUFReader(str(path)).fields
    return HFModel(model.eval(), "causal_lm", _tokenizer(folder, path, gguf_file=name) if has_tokenizer else None)


def pool(h: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(b, d) sentence embeddings from token states h (b, l, d), as sentence-transformers computes them: the mean
    over real tokens (`mask` (b, l), nonzero for real tokens) or the first token's state, L2-normalised when
    `pooling.normalize`."""
    if pooling.mode == "cls":
        e = h[:, 0]  # (b, d)
    else:
        m = mask.unsqueeze(-1).to(h.dtype)  # (b, l, 1)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (b, d)
    return F.normalize(e, p=2, dim=-1) if pooling.normalize else e


def embed(model: nn.Module, pooling: Pooling | Literal["mean", "cls"], input_ids: torch.Tensor,
          attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, d) sentence embeddings of an encoder (`pool` over its last token states)."""
    pooling = Pooling(pooling) if isinstance(pooling, str) else pooling
    h = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (b, l, d)
    return pool(h, attention_mask, pooling)


def pad_id(hf: HFModel) -> int:
    """The token id that pads a sequence: the tokenizer's or config's pad token, else the end-of-sequence token
    (LLaMA-family models have no pad token; causal attention keeps padding at the end from touching real tokens)."""
    for owner in (hf.tokenizer, hf.model.config):
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(owner, name, None) if owner is not None else None
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, int):
                return value
    return 0


class EncoderGraph(nn.Module):
    """An encoder as the one-input graph that is exported, tuned and timed: token ids (b, l) int64, padded with
    `pad` at the end, to sentence embeddings (b, d). The attention mask is computed from the ids inside the graph,
    so padding never counts and the graph keeps a single input."""

    def __init__(self, model: nn.Module, pooling: Pooling, pad: int):
        super().__init__()
        self.model, self.pooling, self.pad = model, pooling, pad

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad).to(torch.int64)
        return pool(self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask, self.pooling)


class CausalLMGraph(nn.Module):
    """A causal LM as a one-input graph: token ids (b, l) int64 to next-token logits (b, l, v)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def graph(hf: HFModel) -> nn.Module:
    """The model as its one-input graph (EncoderGraph, mean pooling where a plain folder names none; or
    CausalLMGraph), in eval mode."""
    if hf.kind == "encoder":
        return EncoderGraph(hf.model, hf.pooling or Pooling("mean"), pad_id(hf)).eval()
    return CausalLMGraph(hf.model).eval()


def _layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The state-dict prefix and the list of the model's repeated blocks: encoder.layer (BERT family) or layers
    (LLaMA family) of its base model."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None) or getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "config"):
        raise KdError(f"A depth student is cut from a BERT-family encoder (encoder.layer) or a LLaMA-family causal "
                      f"LM (model.layers); {type(model).__name__} has neither.")
    prefix = next(name for name, module in model.named_modules() if module is layers)
    return prefix, layers


def depth_student(model: nn.Module, keep: Literal["every_other"] | Sequence[int] = "every_other") -> nn.Module:
    """A shallower copy of a transformers model, DistilBERT style (Sanh et al. 2019, section 3: the student is
    initialised from the teacher by taking one layer out of two): the teacher's config with only the kept layers,
    their weights, and everything else (embeddings, final norm, head) copied. "every_other" keeps layers 0, 2, 4,
    ...; or give the layer indices, in order. The result saves with `save_pretrained` as a Hugging Face folder."""
    prefix, layers = _layer_stack(model)
    n = len(layers)
    kept = list(range(0, n, 2)) if keep == "every_other" else [int(i) for i in keep]
    if not kept or kept != sorted(set(kept)) or not 0 <= kept[0] <= kept[-1] < n:
        raise KdError(f"The layers to keep must be distinct indices in increasing order, within 0..{n - 1}; "
                      f"got {keep}.")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    if isinstance(getattr(config, "layer_types", None), list) and len(config.layer_types) == n:
        config.layer_types = [config.layer_types[i] for i in kept]  # per-layer attention kinds (sliding, full)
    student = type(model)(config).to(next(model.parameters()).dtype)
    teacher_state = model.state_dict()
    in_stack = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    state = {}
    for key in student.state_dict():
        m = in_stack.match(key)
        state[key] = teacher_state[f"{prefix}.{kept[int(m[1])]}.{m[2]}" if m else key]
    student.load_state_dict(state)
    return student.eval()


# The MLP of each block as (input projections, output projection) by attribute path: BERT family
# intermediate.dense (d -> I) and output.dense (I -> d); LLaMA family gate_proj and up_proj (d -> I), down_proj.
MLP_PATHS = ((("intermediate.dense",), "output.dense"), (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"))


def _mlp(block: nn.Module) -> tuple[list[nn.Linear], nn.Linear]:
    for ins, out in MLP_PATHS:
        try:
            return [block.get_submodule(p) for p in ins], block.get_submodule(out)
        except AttributeError:
            continue
    raise KdError(f"A narrower MLP is cut from BERT-family (intermediate.dense, output.dense) or LLaMA-family "
                  f"(mlp.gate_proj, up_proj, down_proj) blocks; {type(block).__name__} has neither.")


def mlp_importance(block: nn.Module) -> torch.Tensor:
    """Per hidden MLP unit: the product of the L2 norms of its input rows and its output column, the magnitude
    criterion of structured pruning (a unit whose weights in or out are small contributes little)."""
    ins, out = _mlp(block)
    score = out.weight.detach().norm(dim=0)
    for lin in ins:
        score = score * lin.weight.detach().norm(dim=1)
    return score


def narrow_mlp(model: nn.Module, size: int) -> nn.Module:
    """A copy of a transformers model whose every MLP keeps the `size` most important hidden units
    (mlp_importance), the width student of structured pruning. The config's intermediate_size says so, so the
    copy saves with `save_pretrained` and loads back with transformers."""
    _, layers = _layer_stack(model)
    full = int(model.config.intermediate_size)
    if not 1 <= size <= full:
        raise KdError(f"A narrower MLP needs between 1 and the teacher's {full} hidden units, got {size}.")
    config = copy.deepcopy(model.config)
    config.intermediate_size = size
    student = type(model)(config).to(next(model.parameters()).dtype)
    state = model.state_dict()
    names = {id(m): n for n, m in model.named_modules()}
    for block in layers:
        keep = mlp_importance(block).topk(size).indices.sort().values
        ins, out = _mlp(block)
        for lin in ins:  # rows of the input projections, columns of the output one
            state[names[id(lin)] + ".weight"] = lin.weight.detach()[keep]
            if lin.bias is not None:
                state[names[id(lin)] + ".bias"] = lin.bias.detach()[keep]
        state[names[id(out)] + ".weight"] = out.weight.detach()[:, keep]
    student.load_state_dict(state)
    return student.eval()


def not_built_yet(path: str | Path, hf: HFModel, verb: str) -> KdError:
    """The sentence for a verb that takes kdcompile's own models only."""
    what = "encoder" if hf.kind == "encoder" else "causal LM"
    return KdError(f"{path} loads as a Hugging Face {what} ({type(hf.model).__name__}), but `kdcompile {verb}` takes "
                   "kdcompile's char-LM checkpoints: distil a Hugging Face model with `kdcompile distill` or "
                   "`kdcompile distill-and-tune`.")
