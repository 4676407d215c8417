"""Bad inputs, tried as a user would: each case is one command in a fresh process, on files made to be wrong.
Writes bench/results/faults/bad_inputs.json: how many gave a clear error (exit status 1, one `error:` sentence on
stderr, no traceback), and each case's exit status and message.

    python -m bench.bad_inputs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "faults" / "bad_inputs.json"


def files(root: Path) -> dict[str, Path]:
    """The wrong files (and a few right ones they are compared with)."""
    import numpy as np
    import torch

    from kdcompile.load import CHECKPOINT_KEY, save_checkpoint
    from kdcompile.models import mnist_cnn

    f = {}
    torch.manual_seed(0)
    model = mnist_cnn(width=4)
    save_checkpoint(model, root / "teacher.pt", "kdcompile.models:mnist_cnn", {"width": 4}, (1, 1, 8, 8),
                    dataset="digits")
    f["teacher"] = root / "teacher.pt"
    f["random_bytes"] = root / "random.pt"
    f["random_bytes"].write_bytes(os.urandom(4096))
    f["truncated"] = root / "truncated.pt"
    f["truncated"].write_bytes(f["teacher"].read_bytes()[:3000])
    f["pickle"] = root / "pickled.pt"
    torch.save(model, f["pickle"])
    f["state_dict"] = root / "state_dict.pt"
    torch.save(model.state_dict(), f["state_dict"])
    f["hostile"] = root / "hostile.pt"
    torch.save({CHECKPOINT_KEY: 1, "arch": "os:system", "arch_kwargs": {"command": "echo hi"},
                "state_dict": model.state_dict()}, f["hostile"])
    f["torchscript"] = root / "teacher.ts"
    torch.jit.save(torch.jit.script(model.eval()), f["torchscript"])
    f["lm_wrong"] = f["teacher"]
    f["corrupt_npy"] = root / "inputs.npy"
    f["corrupt_npy"].write_bytes(b"\x93NUMPY" + os.urandom(100))
    f["corrupt_pt_data"] = root / "inputs.pt"
    f["corrupt_pt_data"].write_bytes(b"PK\x03\x04" + os.urandom(200))
    rows = "\n".join(",".join(["0"] * 64 + [label]) for label in ("1", "2.5", "3"))
    (root / "fraction.csv").write_text(",".join([f"p{i}" for i in range(64)] + ["label"]) + "\n" + rows + "\n")
    f["csv_fraction"] = root / "fraction.csv"
    rows = "\n".join(",".join(["0"] * 64 + [label]) for label in ("1", "-1", "3"))
    (root / "negative.csv").write_text(",".join([f"p{i}" for i in range(64)] + ["label"]) + "\n" + rows + "\n")
    f["csv_negative"] = root / "negative.csv"
    (root / "words.csv").write_text("a,b\n1,x\n2,y\n3,z\n")
    f["csv_text"] = root / "words.csv"
    from PIL import Image

    mixed = root / "mixed_images"
    (mixed / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "top.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "cat" / "one.png")
    f["mixed_images"] = mixed
    (root / "empty_images").mkdir()
    f["empty_images"] = root / "empty_images"
    for name, text in {"invalid": "tune: [unclosed\n", "section": "bench: {threads: 1}\n",
                       "key": "tune: {trails: 300}\n", "trials_str": "tune: {trials: \"300\"}\n",
                       "models_str": "tune: {models: student}\n"}.items():
        (root / f"{name}.yaml").write_text(text)
        f[f"yaml_{name}"] = root / f"{name}.yaml"
    (root / "empty_run").mkdir()
    f["empty_run"] = root / "empty_run"
    damaged = root / "damaged_db_run"
    (damaged / "tune" / "student").mkdir(parents=True)
    (damaged / "tune" / "student" / "database_workload.json").write_text("not json at all\n")
    f["damaged_db"] = damaged / "tune" / "student"
    (root / "only_records").mkdir()
    (root / "only_records" / "database_tuning_record.json").write_text("")
    f["only_records"] = root / "only_records"
    (root / "not_a_dataset").mkdir()
    f["not_a_dataset"] = root / "not_a_dataset"
    f |= hf_files(root)
    return f


def hf_files(root: Path) -> dict[str, Path]:
    """Hugging Face folders, a GGUF file, text and ONNX files made to be wrong (issue #24)."""
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel, BertTokenizer

    from kdcompile.export import to_onnx

    f = {}
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat on mat ran far and".split()
    bert = BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))
    f["hf"] = root / "bert"
    bert.save_pretrained(f["hf"])
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(f["hf"])
    f["hf_no_tokenizer"] = root / "bert_no_tokenizer"
    bert.save_pretrained(f["hf_no_tokenizer"])
    f["hf_no_weights"] = root / "bert_no_weights"
    f["hf_no_weights"].mkdir()
    (f["hf_no_weights"] / "config.json").write_text((f["hf"] / "config.json").read_text())
    f["hf_bad_config"] = root / "bert_bad_config"
    bert.save_pretrained(f["hf_bad_config"])
    (f["hf_bad_config"] / "config.json").write_text('{"model_type": "no_such_model"}')
    f["gguf_junk"] = root / "junk.gguf"
    f["gguf_junk"].write_bytes(b"GGUF" + os.urandom(200))
    f["text_latin1"] = root / "latin1.txt"
    f["text_latin1"].write_bytes("caf\xe9 au lait. ".encode("latin-1") * 50)
    f["text_short"] = root / "short.txt"
    f["text_short"].write_text("The cat sat on the mat. The dog ran far away.")

    class TwoInputs(nn.Module):
        def forward(self, a, b):
            return a + b

    f["onnx_two_inputs"] = root / "two.onnx"
    torch.onnx.export(TwoInputs(), (torch.zeros(1, 4), torch.zeros(1, 4)), str(f["onnx_two_inputs"]),
                      dynamo=False)
    f["onnx_int32"] = root / "int32.onnx"
    to_onnx(nn.Embedding(10, 4).eval(), torch.zeros(1, 3, dtype=torch.int32), f["onnx_int32"], opset=18)
    f["onnx_truncated"] = root / "truncated.onnx"
    to_onnx(nn.Linear(4, 2).eval(), torch.zeros(1, 4), root / "whole.onnx", opset=18)
    f["onnx_truncated"].write_bytes((root / "whole.onnx").read_bytes()[:100])
    return f


def cases(f: dict[str, Path], root: Path) -> dict[str, list[str]]:
    d = ["distill"]
    t = str(f["teacher"])
    return {
        "teacher file missing": d + [str(root / "missing.pt")],
        "teacher is a folder": d + [str(root)],
        "teacher of random bytes": d + [str(f["random_bytes"])],
        "teacher file truncated": d + [str(f["truncated"])],
        "pickled teacher without --trust-pickle": d + [str(f["pickle"])],
        "state_dict without --arch": d + [str(f["state_dict"])],
        "--arch without a colon": d + [str(f["state_dict"]), "--arch", "kdcompile.models"],
        "--arch module not found": d + [str(f["state_dict"]), "--arch", "nosuch_module:build"],
        "checkpoint naming os:system": d + [str(f["hostile"])],
        "--input-shape not numbers": d + [t, "--input-shape", "1,a,8,8"],
        "--input-shape that does not fit": d + [t, "--input-shape", "1,3,8,8"],
        "TorchScript teacher without --data": d + [str(f["torchscript"]), "--student", "kdcompile.models:mnist_cnn"],
        "TorchScript teacher, own student not found": d + [str(f["torchscript"]), "--data", "digits", "--student",
                                                           "nosuch_module:build"],
        "TorchScript teacher with --student depth:K": d + [str(f["torchscript"]), "--data", "digits", "--student",
                                                          "depth:2"],
        "--student mlp:N for a CNN teacher": d + [t, "--student", "mlp:8"],
        "--data unknown name": d + [t, "--data", "imagenet"],
        "--data corrupt .npy": d + [t, "--data", str(f["corrupt_npy"])],
        "--data corrupt .pt": d + [t, "--data", str(f["corrupt_pt_data"])],
        "CSV with a fractional label": d + [t, "--data", str(f["csv_fraction"])],
        "CSV with a negative label": d + [t, "--data", str(f["csv_negative"])],
        "CSV with text below the header": d + [t, "--data", str(f["csv_text"])],
        "image folder with files at its root and in sub-folders": d + [t, "--data", str(f["mixed_images"])],
        "image folder without images": d + [t, "--data", str(f["empty_images"])],
        "dataset of another input shape": d + [t, "--data", "mnist5k"],
        "--student width ratio out of range": d + [t, "--student", "width:2"],
        "--student depth not a number": d + [t, "--student", "depth:x"],
        "--student misspelt": d + [t, "--student", "widht:0.5"],
        "--loss unknown": d + [t, "--loss", "kl"],
        "--epochs not a number": d + [t, "--epochs", "ten"],
        "config file missing": d + [t, "--config", str(root / "missing.yaml")],
        "config not valid YAML": ["tune", str(f["empty_run"]), "--config", str(f["yaml_invalid"])],
        "config with an unknown section (bench:)": ["tune", str(f["empty_run"]), "--config", str(f["yaml_section"])],
        "config with an unknown key": ["tune", str(f["empty_run"]), "--config", str(f["yaml_key"])],
        "config trials: \"300\" (a string)": ["tune", str(f["empty_run"]), "--config", str(f["yaml_trials_str"])],
        "config models: student (not a list)": ["tune", str(f["empty_run"]), "--config", str(f["yaml_models_str"])],
        "export of an empty folder": ["export", str(f["empty_run"])],
        "tune of a folder never exported": ["tune", str(f["empty_run"])],
        "bench of a folder never distilled": ["bench", str(f["empty_run"])],
        "--trials negative": ["tune", str(f["empty_run"]), "--trials", "-1"],
        "--cost-model unknown": ["tune", str(f["empty_run"]), "--cost-model", "xgboost"],
        "--layout unknown": ["tune", str(f["empty_run"]), "--layout", "NCHW16c"],
        "--models with a typo": ["tune", str(f["empty_run"]), "--models", "student,techer"],
        "distill-lm of a classifier": ["distill-lm", t],
        "distill-lm --method unknown": ["distill-lm", t, "--method", "ppo"],
        "costmodel import without a workload file": ["costmodel", "import", str(f["only_records"]), "--data",
                                                     str(root / "ds"), "--network", "n"],
        "costmodel stats of a folder that is not a dataset": ["costmodel", "stats", "--data", str(f["not_a_dataset"])],
        "costmodel train on a folder that is not a dataset": ["costmodel", "train", "--data", str(f["not_a_dataset"]),
                                                              "-o", str(root / "m.pt"), "--steps", "1"],
        "costmodel collect --rpc without a key": ["costmodel", "collect", "--data", str(root / "ds2"), "--rpc",
                                                  "127.0.0.1:9190", "--max-tasks", "1"],
        "costmodel collect unknown network": ["costmodel", "collect", "--data", str(root / "ds3"), "--networks",
                                              "alexnet"],
        "costmodel collect, a target TVM does not know": ["costmodel", "collect", "--data", str(root / "ds4"),
                                                          "--target", "tpu"],
        "Hugging Face folder without tokenizer files": d + [str(f["hf_no_tokenizer"])],
        "Hugging Face folder without weights": d + [str(f["hf_no_weights"])],
        "Hugging Face folder of an unknown model type": d + [str(f["hf_bad_config"])],
        "GGUF file of junk after the magic": d + [str(f["gguf_junk"])],
        "Hugging Face teacher with image data": d + [str(f["hf"]), "--data", "digits"],
        "Hugging Face encoder with a causal-LM loss": d + [str(f["hf"]), "--loss", "fkl"],
        "Hugging Face teacher with a width student": d + [str(f["hf"]), "--student", "width:0.5"],
        "Hugging Face teacher, depth beyond its layers": d + [str(f["hf"]), "--student", "depth:9"],
        "Hugging Face teacher, text not UTF-8": d + [str(f["hf"]), "--data", str(f["text_latin1"])],
        "Hugging Face teacher, text of two sentences": d + [str(f["hf"]), "--data", str(f["text_short"])],
        "Hugging Face teacher, text file missing": d + [str(f["hf"]), "--data", str(root / "missing.txt")],
        "distill-lm of a Hugging Face folder": ["distill-lm", str(f["hf"])],
        "tune an ONNX file with two inputs": ["tune", str(f["onnx_two_inputs"]), "--out", str(root / "o1")],
        "tune an ONNX file with an int32 input": ["tune", str(f["onnx_int32"]), "--out", str(root / "o2")],
        "tune a truncated ONNX file": ["tune", str(f["onnx_truncated"]), "--out", str(root / "o3")],
        "tune --rpc without a key": ["tune", str(f["empty_run"]), "--rpc", "127.0.0.1:9190"],
        "tune --rpc with no tracker there": ["tune", str(root / "whole.onnx"), "--out",
                                             str(root / "o4"), "--rpc", "127.0.0.1:9:nobody"],
        "tune --target a GPU": ["tune", str(root / "whole.onnx"), "--out", str(root / "o5"), "--target",
                                "cuda:sm_86"],
        "costmodel retarget of a folder that is not a dataset": ["costmodel", "retarget", "--data",
                                                                 str(f["not_a_dataset"]), "--out", str(root / "rt"),
                                                                 "--target", "llvm"],
    }


def clear(exit_code: int, stderr: str) -> bool:
    """Exit status 1, one `error:` sentence on one line, no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    return exit_code == 1 and len(errors) == 1 and "Traceback" not in stderr and len(errors[0]) < 500


def main() -> None:
    env = dict(os.environ, KDCOMPILE_QUIET="1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        f = files(root)
        results = []
        for name, args in cases(f, root).items():
            start = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "kdcompile.cli", *args], capture_output=True, text=True,
                               env=env, cwd=root, timeout=300)
            message = next((line for line in r.stderr.splitlines() if line.startswith("error:")),
                           r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "")
            results.append({"case": name, "exit": r.returncode, "clear": clear(r.returncode, r.stderr),
                            "message": message.replace(tmp, "<tmp>"), "seconds": round(time.perf_counter() - start, 1)})
            print(("ok  " if results[-1]["clear"] else "BAD ") + f"{name}: {results[-1]['message'][:150]}",
                  flush=True)
    report = {"tried": len(results), "clear_error": sum(r["clear"] for r in results),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "python -m bench.bad_inputs",
              "cases": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['clear_error']} of {report['tried']} bad inputs gave a clear error")


if __name__ == "__main__":
    main()
