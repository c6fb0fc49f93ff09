"""Local training and inference for the three phases: data pipeline (data.py), loops (loops.py), inference
(infer.py)."""
