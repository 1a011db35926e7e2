"""Data: the processed-clip format, audio features, landmarks, SynthTalk, preprocessing and the DataModule."""
