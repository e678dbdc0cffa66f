"""Transcriptions of the uapi headers vfiofs speaks: data only, no behaviour."""
