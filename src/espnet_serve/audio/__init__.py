"""Audio in: any upload or file to the model's waveform (``ingest``), cut into speech segments.

``ingest`` decodes and resamples, checking the header before any sample is read;
``vad`` gives Silero's speech probability per window; ``segmenter`` cuts a stream of
blocks into the segments the model decodes.
"""
