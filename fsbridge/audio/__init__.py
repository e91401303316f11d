"""Audio utilities: WAV files, byte carry and streaming resamplers."""
