"""Hugging Face teachers (kdcompile/hf.py) on tiny random models saved in tmp_path: folders, sentence-transformers
folders and a GGUF file load with the original's outputs; depth students keep the teacher's layers and round-trip
through save_pretrained; bad inputs get one sentence. Nothing is downloaded (the hub is off)."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from transformers import (BertConfig, BertForMaskedLM, BertModel, BertTokenizer, LlamaConfig,  # noqa: E402
                          LlamaForCausalLM)

from kdcompile.errors import KdError  # noqa: E402
from kdcompile.hf import (Pooling, depth_student, embed, is_hf_folder, load_gguf, load_hf,  # noqa: E402
                          mlp_importance, narrow_mlp)
from kdcompile.load import load_model  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat on mat ran far and".split()


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; the other core is someone else's
    yield
    torch.set_num_threads(before)


def _bert(cls=BertModel, layers=4):
    torch.manual_seed(0)
    return cls(BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=32)).eval()


def _llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        tie_word_embeddings=False)).eval()


def _bert_folder(folder, model):
    model.save_pretrained(folder)  # safetensors
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return folder


def _out(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


IDS = torch.tensor([[2, 5, 7, 8, 3], [2, 6, 9, 3, 0]])


def test_a_bert_folder_loads_as_an_encoder_with_its_tokenizer(tmp_path):
    teacher = _bert()
    folder = _bert_folder(tmp_path / "bert", teacher)
    assert is_hf_folder(folder) and not is_hf_folder(tmp_path)
    hf = load_hf(folder)
    assert hf.kind == "encoder" and not hf.model.training and hf.pooling is None
    assert torch.equal(_out(hf.model, IDS), _out(teacher, IDS))
    assert hf.tokenizer("the cat sat")["input_ids"] == [2, 5, 7, 9, 3]
    loaded = load_model(folder)  # the teacher detector sends folders here
    assert loaded.kind == "hf_folder" and loaded.meta["model_kind"] == "encoder" and loaded.hf.tokenizer is not None


def test_a_masked_lm_checkpoint_loads_its_encoder(tmp_path):
    teacher = _bert(BertForMaskedLM)
    teacher.save_pretrained(tmp_path)
    hf = load_hf(tmp_path)
    assert hf.kind == "encoder" and isinstance(hf.model, BertModel) and hf.tokenizer is None
    assert torch.equal(_out(hf.model, IDS), _out(teacher.bert, IDS))


def test_a_llama_folder_loads_as_a_causal_lm(tmp_path):
    teacher = _llama()
    teacher.save_pretrained(tmp_path)
    hf = load_hf(tmp_path)
    assert hf.kind == "causal_lm" and isinstance(hf.model, LlamaForCausalLM) and hf.tokenizer is None
    assert torch.equal(_out(hf.model, IDS), _out(teacher, IDS))


def _layers(model):
    return model.encoder.layer if isinstance(model, BertModel) else model.model.layers


@pytest.mark.parametrize("make, keep, kept", [(_bert, "every_other", [0, 2]), (_llama, "every_other", [0, 2]),
                                              (_llama, [1, 3], [1, 3]), (lambda: _bert(layers=3), [2], [2])])
def test_a_depth_student_keeps_the_teachers_layers_and_round_trips(tmp_path, make, keep, kept):
    teacher = make()
    student = depth_student(teacher, keep)
    assert len(_layers(student)) == len(kept) == student.config.num_hidden_layers
    assert len(_layers(teacher)) == teacher.config.num_hidden_layers  # the teacher is untouched
    for j, i in enumerate(kept):
        s, t = _layers(student)[j].state_dict(), _layers(teacher)[i].state_dict()
        assert s.keys() == t.keys() and all(torch.equal(s[k], t[k]) for k in s)
    layer_free = {k: v for k, v in teacher.state_dict().items() if ".layer." not in k and ".layers." not in k}
    assert layer_free and all(torch.equal(student.state_dict()[k], v) for k, v in layer_free.items())
    assert not torch.equal(_out(student, IDS), _out(teacher, IDS))  # it is a different, shallower model
    student.save_pretrained(tmp_path / "student")
    again = load_hf(tmp_path / "student").model
    assert len(_layers(again)) == len(kept)
    assert torch.equal(_out(again, IDS), _out(student, IDS))


def test_keeping_every_layer_reproduces_the_teacher():
    teacher = _llama()
    assert torch.equal(_out(depth_student(teacher, range(4)), IDS), _out(teacher, IDS))


@pytest.mark.parametrize("keep", [[], [2, 0], [0, 0], [0, 4], [-1]])
def test_a_bad_list_of_layers_is_one_sentence(keep):
    with pytest.raises(KdError, match="distinct indices in increasing order, within 0..3"):
        depth_student(_bert(), keep)


def test_a_model_without_a_layer_stack_is_refused():
    with pytest.raises(KdError, match="has neither"):
        depth_student(torch.nn.Linear(2, 2))


def _mlp_out(block):
    return block.output.dense if hasattr(block, "output") else block.mlp.down_proj


@pytest.mark.parametrize("make", [_bert, _llama])
def test_a_full_width_mlp_reproduces_the_teacher(make):
    teacher = make()
    assert torch.equal(_out(narrow_mlp(teacher, 64), IDS), _out(teacher, IDS))


@pytest.mark.parametrize("make", [_bert, _llama])
def test_a_narrower_mlp_drops_the_units_that_contribute_nothing_and_round_trips(tmp_path, make):
    teacher = make()
    dead = torch.arange(0, 64, 2)  # half the units of every MLP write nothing: the width student must drop them
    with torch.no_grad():
        for block in _layers(teacher):
            _mlp_out(block).weight[:, dead] = 0
    assert all(bool((mlp_importance(b)[dead] == 0).all()) for b in _layers(teacher))
    student = narrow_mlp(teacher, 32)
    assert student.config.intermediate_size == 32 and teacher.config.intermediate_size == 64
    per_layer = (2 if isinstance(teacher, BertModel) else 3) * 32 * 32  # rows/columns of 32-wide projections
    drop = per_layer + (32 if isinstance(teacher, BertModel) else 0)  # BERT's input projection has a bias
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(teacher) - n(student) == 4 * drop
    assert torch.allclose(_out(student, IDS), _out(teacher, IDS), atol=1e-5)  # only dead units went
    student.save_pretrained(tmp_path / "narrow")
    assert torch.equal(_out(load_hf(tmp_path / "narrow").model, IDS), _out(student, IDS))


@pytest.mark.parametrize("size", [0, 65])
def test_a_bad_mlp_width_is_one_sentence(size):
    with pytest.raises(KdError, match="between 1 and the teacher's 64 hidden units"):
        narrow_mlp(_llama(), size)


def _sentence_transformer(root, transformer_path, flags, normalize):
    teacher = _bert()
    _bert_folder(root / transformer_path if transformer_path else root, teacher)
    modules = [{"idx": 0, "name": "0", "path": transformer_path, "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))
    return teacher


@pytest.mark.parametrize("transformer_path, flag, mode, normalize", [
    ("", "pooling_mode_mean_tokens", "mean", True),  # all-MiniLM-L6-v2's layout
    ("0_Transformer", "pooling_mode_cls_token", "cls", False),  # older folders keep the transformer in a subfolder
])
def test_a_sentence_transformers_folder_embeds_as_sentence_transformers_does(tmp_path, transformer_path, flag, mode,
                                                                             normalize):
    teacher = _sentence_transformer(tmp_path, transformer_path, {flag: True, "pooling_mode_max_tokens": False},
                                    normalize)
    assert is_hf_folder(tmp_path)
    hf = load_hf(tmp_path)
    assert hf.kind == "encoder" and hf.pooling == Pooling(mode, normalize)
    batch = hf.tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
    with torch.no_grad():
        got = embed(hf.model, hf.pooling, batch["input_ids"], batch["attention_mask"])
        hand = []
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            h = teacher(input_ids=ids[mask.bool()][None]).last_hidden_state[0]  # (l, d), the padding cut off
            e = h.mean(0) if mode == "mean" else h[0]
            hand.append(e / e.norm() if normalize else e)
    assert batch["attention_mask"][1, -1] == 0  # the second sentence is padded, so the mask matters
    assert got.shape == (2, 32)
    torch.testing.assert_close(got, torch.stack(hand), rtol=1e-5, atol=1e-6)


def test_a_pooling_kdcompile_does_not_compute_is_one_sentence(tmp_path):
    _sentence_transformer(tmp_path, "", {"pooling_mode_max_tokens": True}, False)
    with pytest.raises(KdError, match="pools token states by max; kdcompile computes mean or cls"):
        load_hf(tmp_path)


def _permute(w, heads):
    """llama.cpp's rotary layout of the q and k projections (convert_hf_to_gguf.py), which transformers undoes."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(path, model):
    """The model as llama.cpp's converter would write it, in float32, with a tiny byte-level BPE tokenizer."""
    import gguf
    import numpy as np

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_vocab_size(c.vocab_size)
    tokens = ["<pad>", "<s>", "</s>"] + [chr(ord("a") + i) for i in range(26)] + ["ab", "Ġ"]
    tokens += [f"x{i}" for i in range(c.vocab_size - len(tokens))]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["a b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for key, value in model.state_dict().items():
        module, suffix = key.rsplit(".", 1)
        name = f"{names.get_name(module)}.{suffix}"
        a = value.numpy().astype(np.float32)
        a = _permute(a, c.num_attention_heads) if ".attn_q." in name else a
        a = _permute(a, c.num_key_value_heads) if ".attn_k." in name else a
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_gguf_file_loads_as_the_causal_lm_it_was_written_from(tmp_path):
    pytest.importorskip("gguf")
    teacher = _llama()
    _write_gguf(tmp_path / "tiny.gguf", teacher)
    hf = load_gguf(tmp_path / "tiny.gguf")
    assert hf.kind == "causal_lm" and isinstance(hf.model, LlamaForCausalLM)
    assert all(p.dtype == torch.float32 for p in hf.model.parameters())
    assert torch.equal(_out(hf.model, IDS), _out(teacher, IDS))
    assert hf.tokenizer("abc", add_special_tokens=False)["input_ids"] == [29, 5]  # "ab" merged, then "c"
    assert load_model(tmp_path / "tiny.gguf").kind == "gguf"  # detected by its magic, not its name
    depth_student(hf.model).save_pretrained(tmp_path / "student")
    assert load_hf(tmp_path / "student").model.config.num_hidden_layers == 2


def _gguf_of(path, arch):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_block_count(2)
    w.add_embedding_length(32)
    w.add_tensor("token_embd.weight", np.zeros((10, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_bad_gguf_files_are_one_sentence(tmp_path):
    pytest.importorskip("gguf")
    with pytest.raises(KdError, match="'t5' model, not a causal LM"):
        load_gguf(_gguf_of(tmp_path / "enc.gguf", "t5encoder"))
    with pytest.raises(KdError, match="GGUF reader cannot read its header.*architecture bert is not supported"):
        load_gguf(_gguf_of(tmp_path / "bert.gguf", "bert"))
    (tmp_path / "fake.gguf").write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(KdError, match="not a GGUF file"):
        load_gguf(tmp_path / "fake.gguf")


def _config_only(folder, config: dict, weights=True):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")  # never read: the config is refused first
    return folder


def test_bad_folders_are_one_sentence(tmp_path):
    with pytest.raises(KdError, match="has a config.json but no weights"):
        load_model(_config_only(tmp_path / "empty", BertConfig().to_dict(), weights=False))
    with pytest.raises(KdError, match="cannot build offline from its own code"):
        load_hf(_config_only(tmp_path / "unknown", {"model_type": "kd-no-such-model"}))
    custom = {"model_type": "kd-custom", "architectures": ["KdCustom"], "auto_map": {"AutoModel": "modeling.KdCustom"}}
    with pytest.raises(KdError, match="cannot build offline from its own code"):
        load_hf(_config_only(tmp_path / "custom", custom))
    with pytest.raises(KdError, match="'vit' model.*kdcompile loads BERT-family encoders and causal LMs"):
        load_hf(_config_only(tmp_path / "vit", {"model_type": "vit", "architectures": ["ViTModel"]}))
    cut = tmp_path / "cut"
    _bert().save_pretrained(cut)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(KdError, match="The weights in .*cut do not load into AutoModel"):
        load_hf(cut)
    (tmp_path / "plain").mkdir()
    with pytest.raises(KdError, match="is a folder; give the model file itself, or a Hugging Face model folder"):
        load_model(tmp_path / "plain")


def test_a_missing_install_names_the_pip_command(tmp_path, monkeypatch):
    folder = _bert_folder(tmp_path / "bert", _bert())
    (tmp_path / "x.gguf").write_bytes(b"GGUF" + bytes(100))
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "transformers", None)  # import transformers now fails
        with pytest.raises(KdError, match=r"transformers is missing\): pip install 'kdcompile\[hf\]'"):
            load_hf(folder)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "gguf", None)
        with pytest.raises(KdError, match=r"Loading a GGUF file needs .*gguf is missing"):
            load_gguf(tmp_path / "x.gguf")


def test_image_data_for_a_hugging_face_teacher_is_one_sentence(tmp_path):
    folder = _bert_folder(tmp_path / "bert", _bert(layers=2))
    r = subprocess.run([sys.executable, "-m", "kdcompile.cli", "distill", str(folder), "--data", "digits",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True,
                       env=dict(os.environ, KDCOMPILE_QUIET="1", OMP_NUM_THREADS="1"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "'digits' is image data; a Hugging Face teacher distils on text" in r.stderr


def test_importing_kdcompile_and_its_loader_leaves_transformers_out():
    code = "import sys, kdcompile, kdcompile.load; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('transformers', 'gguf', 'safetensors', 'tokenizers', 'accelerate')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
