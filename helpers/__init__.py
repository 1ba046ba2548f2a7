"""Code behind the DPO notebook course: the lessons at the top, in the order a learner reads them.

losses      DPO-family losses on per-pair sequence log-probs (sigmoid, IPO, hinge, ...), gradient weight   (notebook 01)
logprobs    masked token / sequence log-probs: the readable version first, the lean one after           (01)
bandit      the DPO derivation checked exactly on a bandit (Bradley-Terry -> implicit reward -> loss)     (01)
data        HH-RLHF transcripts -> conversational prompt/chosen/rejected, chat text, token lengths        (02)
scratch     DPO by hand on a batch, and TRL on the same batch                                              (01)
models      load_model / load_tokenizer (Unsloth or transformers + peft), LoRA settings                   (03)
recipe      DPORecipe -> DPOConfig / DPOTrainer -> run_recipe: notebook 03's training run                  (03)
evaluation  held-out pair log-probs, reward metrics, the sampling helper, reports, KL from samples         (03-05)
quality     the malformed-answer check (a collapse check) and its calibration                             (03-05)
judge       judges of answers: a reward model on your GPU, its trust measured before its verdict       (04-05)
llm_judge   the optional LLM judge behind an OpenAI-compatible API, every failure counted          (05)
sweep       the same recipe at several betas or loss types, each run measured the same way                (04)
sweep_report  what a sweep shows: its table, the healthy runs, facts beyond 2 s.e., the over-optimised run (04)
compare     reference vs policy answers side by side: scored, win rates with intervals, export            (05)

worlds/     where pairs and reference models come from: splits (hub / file / toy), toy, toy_model, onpolicy
infra/      the floor: settings, paths, runtime, quiet, checks, colab, lock, outputs, hubio, smollm2, tinymodel
course/     the machinery: suite (make run), nbexec, hub (local hub), cli, estimate, export (merged, hub, GGUF),
            gguf (llama.cpp's converter, GGUF headers, the Ollama Modelfile), plots, publish, presets (each
            notebook's offline plan, DPO_QUICK's sizes), reports (stored measurements printed: pilot, GPU cost,
            benchmarks), runahead (a workshop's run-ahead), schedule (main paths, the workshop plans);
            ``helpers.course`` is what notebooks import of it (setup_course, banner, detect, the plans, reports
            and figures, export; loaded on first use)

A module imports only modules listed above it in its own layer's order or in a layer below (infra is the floor,
course the top); tests/test_layers.py reads every import and fails on a circle or an upward import.
"""

from helpers.infra import quiet as _quiet

_quiet.install()
