"""The segment pipeline: audio segments to timed transcripts, with no server.

``decode`` (:class:`SegmentDecoder`) is the one place segments are decoded: the
library ``transcriber``, the model service, the ``warmup`` and ``evaluate`` use it.
``align`` times words on the CTC head, ``types`` holds what comes out (``Word``,
``Segment``, ``Transcript``), ``subtitles`` writes SRT and WebVTT.
"""
