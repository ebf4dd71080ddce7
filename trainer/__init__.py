"""GMTRouter model, inductive training, simulator and offline evaluation (nothing heavy at import)."""
