"""Test fixtures that ship with the package, for kelocate's tests, its benchmarks and users' own tests.

`random_model.build_random_llama` writes a random-weight Llama with its own small tokenizer as a Hugging
Face folder, deterministic for a seed: a real local model path without any download, loaded through the
same `kelocate.load_model` as any other folder (it has no organism world, so its provenance is generic).
It lives in the package rather than under `tests/` because the benchmarks build their GPT-2-sized
reference model with it. Nothing in kelocate's own code paths imports this room.
"""
