"""Code behind the DPO notebook course. One module per concept; notebooks narrate and call these.

losses    DPO-family losses on sequence log-probs         logprobs  masked per-token / per-sequence log-probs
tinymodel locally built tokenizer + tiny Llama models       suite     the `make run` notebook runner
bandit    the discrete bandit where the DPO derivation is checked exactly (notebook 01)
"""
