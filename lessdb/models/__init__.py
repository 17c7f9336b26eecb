"""Base models and what every stage does with one: loading (the bundled GGUF models, converted once per workspace;
the tiny test Llama; a local Hugging Face directory), tokenization into the conversation form's prompt and
completion, length-ordered batches, and the completion-token loss. Nothing here knows about runs or features.
"""
