"""Networks and model files: presets, ViT encoder, SMIT heads, UNETR-style decoder, classifiers, checkpoints."""
