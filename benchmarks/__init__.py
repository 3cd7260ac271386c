"""The benchmark suite of foundry-emulator (see run.py)."""
