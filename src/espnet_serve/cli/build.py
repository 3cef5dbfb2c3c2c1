"""``espnet-serve build`` and ``espnet-serve import-default``: models into the store, then a Bento.

``build`` imports a model tag, archive or directory with
:func:`espnet_serve.bundle.store.import_bundle` and, with ``--bento``, runs
``bentoml build`` on the repository's ``bentofile.yaml`` with the imported
model's exact tag wired in twice: as the Bento argument ``model_tag`` (stored
in the Bento, so ``bentoml serve <bento>`` and its container serve exactly
that version) and as ``ESPNET_SERVE_MODEL_TAG`` for the build itself (the
service's ``BentoModel`` class attribute, which ``bentoml build`` records).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_TAG_ENV = "ESPNET_SERVE_MODEL_TAG"
MODEL_TAG_ARG = "model_tag"
DOCKERFILE_RELPATH = Path("env") / "docker" / "Dockerfile"
_TAG_PREFIX = "__tag__:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``build`` options."""
    parser.add_argument(
        "source",
        help="espnet_model_zoo tag or Hugging Face repo id, a .zip/.tar.gz/.tgz archive, "
        "or an unpacked bundle directory.",
    )
    parser.add_argument("--name", help="Model name in the BentoML store (default: from source).")
    parser.add_argument(
        "--language",
        dest="languages",
        action="append",
        default=None,
        help="ISO-639-1 code of a language the model transcribes (repeatable; default: "
        "meta.yaml's languages). The server refuses requests for other languages.",
    )
    parser.add_argument(
        "--target-language",
        dest="target_languages",
        action="append",
        default=None,
        help="ISO-639-1 code of a language a translation model writes (repeatable; default: "
        "meta.yaml's target_languages). The server refuses translations into others.",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=None,
        help="The model's sample rate in Hz (default: meta.yaml's sample_rate, else the "
        "training config's). Enhancement configs do not record it: give it for them.",
    )
    parser.add_argument(
        "--trust-user-code",
        action="store_true",
        help="Include the bundle's own Python code (src/) and let its config use it. "
        "Review that code first: it runs inside the server.",
    )
    parser.add_argument(
        "--user-code-path",
        action="append",
        dest="user_code_paths",
        metavar="PATH",
        help="Bundle-relative import root of user code (repeatable; default: meta.yaml's, "
        "else src).",
    )
    parser.add_argument(
        "--cachedir", type=Path, help="espnet_model_zoo download cache (tags only)."
    )
    parser.add_argument(
        "--bento", action="store_true", help="Also build a Bento serving the imported model."
    )
    parser.add_argument(
        "--with-model",
        dest="with_models",
        action="append",
        default=[],
        metavar="TAG",
        help="With --bento: also serve this stored model (repeatable; e.g. a TTS model beside "
        "an ASR one). Each gets its own model service; the imported model comes first.",
    )
    parser.add_argument(
        "--bentofile",
        type=Path,
        default=Path("bentofile.yaml"),
        help="bentofile for --bento; its directory is the build context (default: %(default)s).",
    )


def build_bento(model_tag: str, bentofile: Path) -> tuple[str, Path]:
    """Run ``bentoml build`` for stored models.

    Args:
        model_tag: The exact model tag (``name:version``) the Bento serves, or several,
            comma-separated.
        bentofile: The ``bentofile.yaml``; its directory is the build context.

    Returns:
        tuple[str, Path]: The Bento tag and the path of its generated Dockerfile.

    Raises:
        FileNotFoundError: If ``bentofile`` does not exist.
        RuntimeError: If ``bentoml build`` fails.
    """
    import bentoml

    if not bentofile.is_file():
        raise FileNotFoundError(f"No bentofile at {bentofile}; pass --bentofile.")
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "build",
        str(bentofile.parent.absolute()),
        "--bentofile",
        str(bentofile.absolute()),
        "--output",
        "tag",
        "--arg",
        f"{MODEL_TAG_ARG}={model_tag}",
    ]
    logger.info("Running bentoml build (%s)", bentofile)
    result = subprocess.run(
        command,
        # The Bento records the model services whatever machine builds it; where the models
        # run is decided where it is served (serving/placement.py).
        env={**os.environ, MODEL_TAG_ENV: model_tag, "ESPNET_SERVE_MODEL_IN_PROCESS": "false"},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    tags = [line[len(_TAG_PREFIX) :] for line in result.stdout.splitlines() if _TAG_PREFIX in line]
    if result.returncode != 0 or not tags:
        raise RuntimeError(f"bentoml build failed (exit status {result.returncode}).")
    bento = bentoml.get(tags[-1].strip())
    return str(bento.tag), Path(bento.path) / DOCKERFILE_RELPATH


def exact_tag(tag: str) -> str:
    """The exact ``name:version`` of a stored model (``latest`` resolved).

    Raises:
        ValueError: If the store has no such model.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound as exc:
        raise ValueError(f"--with-model {tag}: no such model in the store.") from exc


def main(args: argparse.Namespace) -> int:
    """Run ``espnet-serve build``; returns the exit status."""
    from espnet_serve.bundle.store import import_bundle, stored_spec
    from espnet_serve.executors import executor_class
    from espnet_serve.executors.base import TRANSLATE
    from espnet_serve.serving.settings import KEEP_ALIVE_SECONDS

    try:
        model = import_bundle(
            args.source,
            name=args.name,
            trust_user_code=args.trust_user_code,
            user_code_paths=args.user_code_paths,
            cachedir=args.cachedir,
            languages=args.languages,
            target_languages=args.target_languages,
            sample_rate=args.sample_rate,
        )
        print(f"Model: {model.tag}")
        spec = stored_spec(model)
        print(f"Family: {spec.family or 'none served'} ({spec.inference_class})")
        executor = executor_class(spec.family, spec.inference_class)
        print(f"Tasks: {', '.join(executor.tasks)}")
        print(f"Sample rate: {spec.sample_rate} Hz")
        if TRANSLATE in executor.tasks:
            targets = ", ".join(spec.target_languages) or (
                "not recorded: any target_language is accepted (pass --target-language)"
            )
            print(f"Target languages: {targets}")
        if args.bento:
            served = [str(model.tag), *(exact_tag(tag) for tag in args.with_models)]
            bento_tag, dockerfile = build_bento(",".join(served), args.bentofile)
            print(f"Models: {', '.join(served)}")
            print(f"Bento: {bento_tag}")
            print(f"Dockerfile: {dockerfile}")
            print(f"Serve it: bentoml serve {bento_tag} --timeout-keep-alive {KEEP_ALIVE_SECONDS}")
    except (OSError, ValueError, RuntimeError) as exc:
        logger.error("Build failed: %s", exc)
        return 1
    return 0


def import_default_main(args: argparse.Namespace) -> int:
    """Run ``espnet-serve import-default``; returns the exit status."""
    from espnet_serve.bundle.store import (
        ensure_default_model,
        ensure_default_streaming_model,
        ensure_default_voice,
    )

    try:
        print(f"Model: {ensure_default_model()}")
        print(f"Streaming model: {ensure_default_streaming_model()}")
        print(f"Voice: {ensure_default_voice()}")
    except (OSError, ValueError, RuntimeError) as exc:
        logger.error("Importing the default model failed: %s", exc)
        return 1
    return 0
