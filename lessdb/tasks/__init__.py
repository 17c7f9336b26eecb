"""Target tasks (SPEC §2): the small validation sets a selection aims at. `catalog`: built-in, file and LESS-folder
tasks, content-addressed and versioned in the workspace; `less_eval`: a LESS `data/eval` folder; `less_formats`:
LESS's prompt formats, shared with the evaluation prompts.
"""
