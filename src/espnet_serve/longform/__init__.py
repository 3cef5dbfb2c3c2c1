"""Long recordings: voice-activity segmentation, batched decoding, CTC word timing, subtitles.

``segmenter`` cuts a stream of audio blocks into speech segments (``vad``: Silero VAD),
``align`` times each word by CTC forced alignment, ``transcript`` holds the result,
``formats`` writes SRT/WebVTT, and ``transcriber`` runs it all on an ``InferenceSession``.
The HTTP service uses the same segmenter, aligner and transcript types.
"""
