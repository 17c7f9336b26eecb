"""Training runs: step 1 of LESS (`warmup`: LoRA on a random p% of a pool) and step 4 (`train`: LoRA on a
selection), through one trainer (`trainer`), one run lifecycle (`lifecycle`: subsets, records, resume) and one
checkpoint format (`checkpoints`; `checkpoint_models` loads a checkpoint back as a model). `config` holds their
typed settings and presets.
"""
