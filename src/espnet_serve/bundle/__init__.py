"""Packaged models: the bundle layout, safe fetching, trust, configs, the model store, the session.

A source (tag, archive, directory) is fetched and checked (``sources``, ``archive``),
planned and written as a verified bundle (``plan``, ``relocate``, ``spec``), stored in
the BentoML model store and loaded back (``store``) into an ``InferenceSession``
(``session``, built from its inference config: ``config``, ``usercode``, ``imports``).
"""
