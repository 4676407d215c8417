"""An ONNX model you already have, for the compiler half alone: `kdcompile tune model.onnx` and `kdcompile bench
model.onnx` tune and time it without distilling anything.

The file gets a run folder (default runs/<file name>, or --out) holding what `export` would have left there for
one model: the model, copied byte for byte as model.onnx (rundir.MODEL), and export.json with its input's name
and shape and the file it came from (path and SHA-256). A rerun finds the folder again and tuning resumes; a
folder made for other contents, or holding a distilled run, is refused rather than mixed up. Such a run has no
teacher, no student and no data: parity is TVM against onnxruntime on seeded random inputs.

Taken: one input, float32 or int64 token ids (its shape from the graph, or --input-shape where the graph leaves
dimensions open), and one output, weights inside the file. Random int64 inputs are drawn below the number of rows
of the table the ids index (the first Gather that reads them), so they stay in range.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kdcompile.errors import KdError
from kdcompile.files import atomic_path, file_sha256
from kdcompile.inputs import InputSpec
from kdcompile.rundir import MODEL, RunDir, default_root


def run_folder(source: str | Path, out: str | Path | None = None,
               input_shape: tuple[int, ...] | None = None) -> Path:
    """The run folder a stage works in: `source` itself when it is a folder; for an ONNX file, the run folder made
    for it (or found again, on a rerun)."""
    source = Path(source)
    if source.is_dir():
        if out is not None or input_shape is not None:
            raise KdError(f"--out and --input-shape are for an ONNX file, and {source} is a run folder.")
        return source
    if not source.exists():
        raise KdError(f"{source} does not exist: give a run folder written by `kdcompile export`, or an ONNX file.")
    model = load(source)
    run = RunDir(out if out is not None else default_root(source))
    sha = file_sha256(source)
    made = _made_for(run, source, sha)  # None for a new folder
    name, spec = graph_input(model, source, input_shape if made is None or input_shape is not None
                             else tuple(made["input_shape"]))  # a rerun keeps the shape it was made for
    shape = spec.shape
    if made is not None:
        if tuple(made["input_shape"]) != shape:
            raise KdError(f"{run.root} was made for input shape {_dims(made['input_shape'])}, not "
                          f"{_dims(shape)}: pass --out with another folder for this shape.")
        if file_sha256(run.onnx(MODEL)) == sha:
            return run.root  # a rerun: nothing to copy, the tuning state stays
    with atomic_path(run.onnx(MODEL)) as tmp:
        shutil.copyfile(source, tmp)
    # written last: a copy interrupted before it leaves no run that looks complete
    run.write_json("export.json", spec.as_json() | {
        "input_name": name, "models": [MODEL],
        "source": {"path": str(source.resolve()), "sha256": sha},
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        MODEL: {"onnx": run.onnx(MODEL).name, "onnx_max_abs": None},  # no PyTorch model to compare with
    })
    return run.root


def _made_for(run: RunDir, source: Path, sha: str) -> dict | None:
    """export.json of a run folder made earlier for these contents; None for a new folder. A folder holding
    anything else (a distilled run, another model) is refused: its tuning records do not apply."""
    if (run.root / "export.json").exists():
        made = run.read_json("export.json")
        if "source" not in made:
            raise KdError(f"{run.root} holds a distilled run, not one made for {source}: pass --out with another "
                          "folder.")
        if made["source"]["sha256"] != sha:
            raise KdError(f"{run.root} was made for another model ({made['source']['path']}, other contents), "
                          f"whose tuning does not apply to {source}: pass --out with another folder, or delete it.")
        return made
    if (run.root / "run.json").exists():
        raise KdError(f"{run.root} holds a distilled run, not one made for {source}: pass --out with another folder.")
    return None


def load(path: Path):
    """The ONNX ModelProto in `path`, told from its contents (whatever the file is called), checked by onnx.checker."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    not_onnx = f"{path} is not an ONNX model (it does not parse as one): tune and bench take an ONNX file or a run " \
               "folder written by `kdcompile export` (a PyTorch model goes through `kdcompile distill-and-tune`)."
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX file
        raise KdError(not_onnx) from None
    if not model.ir_version or not model.graph.node or not model.graph.output:  # e.g. an empty file parses
        raise KdError(not_onnx)
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise KdError(f"{path} keeps its weights in separate files (ONNX external data): save it as one file "
                      "first (onnx.save with save_as_external_data=False).")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise KdError(f"{path} fails onnx.checker: {str(e).strip().splitlines()[0][:300]}") from None
    return model


def graph_input(model, path: Path, input_shape: tuple[int, ...] | None) -> tuple[str, InputSpec]:
    """The name and InputSpec of the model's one input (float32, or int64 ids): the graph's static shape, or
    `input_shape` (which must fit the dimensions the graph fixes)."""
    import onnx

    weights = {t.name for t in model.graph.initializer}  # older exporters list weights among the inputs
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise KdError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs) or 'none'}); kdcompile "
                      "tunes models with one input.")
    if len(model.graph.output) != 1:
        raise KdError(f"{path} has {len(model.graph.output)} outputs; kdcompile tunes models with one output.")
    inp = inputs[0]
    if not inp.type.HasField("tensor_type"):
        raise KdError(f"{path}'s input '{inp.name}' is not a tensor; kdcompile tunes models with one float32 "
                      "or int64 tensor input.")
    tensor = inp.type.tensor_type
    if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64):
        raise KdError(f"{path}'s input '{inp.name}' holds {onnx.TensorProto.DataType.Name(tensor.elem_type).lower()}"
                      "; kdcompile tunes models with one float32 or int64 input.")
    dtype = "float32" if tensor.elem_type == onnx.TensorProto.FLOAT else "int64"
    high = _gathered_rows(model, inp.name) if dtype == "int64" else None
    # None: a dimension the graph leaves open (a name such as "batch", or nothing)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim] \
        if tensor.HasField("shape") else None
    if input_shape is None:
        if dims is None or None in dims:
            shown = "of unknown rank" if dims is None else "(" + ", ".join(
                str(v) if v else (d.dim_param or "?") for v, d in zip(dims, tensor.shape.dim)) + ")"
            example = "1,3,224,224" if dims is None else ",".join(str(v or 1) for v in dims)
            raise KdError(f"{path}'s input '{inp.name}' has open dimensions {shown}: give the shape to compile for "
                          f"with --input-shape, e.g. --input-shape {example}.")
        return inp.name, InputSpec(tuple(dims), dtype, high)
    fits = dims is None or len(dims) == len(input_shape) and all(d in (None, s) for d, s in zip(dims, input_shape))
    if not fits:
        raise KdError(f"--input-shape {_dims(input_shape)} does not fit {path}'s input '{inp.name}', of shape "
                      f"({', '.join(str(d or '?') for d in dims)}).")
    return inp.name, InputSpec(tuple(input_shape), dtype, high)


def _gathered_rows(model, name: str) -> int:
    """Rows of the weight table the first Gather indexes with input `name` (the vocabulary of token ids); 1 when
    no Gather reads it directly (then the random inputs are zeros, always in range)."""
    from onnx import numpy_helper

    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == name and node.input[0] in tables:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            return int(numpy_helper.to_array(tables[node.input[0]]).shape[axis])
    return 1


def _dims(shape) -> str:
    return ",".join(str(d) for d in shape)
