"""Where preference pairs and reference policies come from, apart from the lessons that use them.

splits     HH-RLHF from the hub, a file or the toy world; notebook 02's saved splits and their staleness
toy        the toy politeness world: HH-format dialogues with a ground-truth reward (the offline default)
toy_model  its tiny SmolLM2-family SFT reference model, built and cached
onpolicy   SmolLM2's own answers to the toy world's questions, ranked by a ground-truth check
"""
