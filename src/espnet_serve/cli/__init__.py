"""The ``espnet-serve`` command line (``main``): build, import-default, eval, transcribe."""
