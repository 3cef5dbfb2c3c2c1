"""Load the recipe configuration (``conf/recipe.yaml`` and configs extending it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RECIPE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = RECIPE_DIR / "conf" / "recipe.yaml"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``override``, merging nested mappings key by key.

    Args:
        base: The mapping to start from.
        override: Values that replace (or, for mappings, are merged into) ``base``'s.

    Returns:
        dict[str, Any]: A new merged mapping; the inputs are not modified.
    """
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path = DEFAULT_CONFIG) -> dict[str, Any]:
    """Load a recipe config; an ``extends: other.yaml`` key merges it onto that file.

    Args:
        path: The YAML file. ``extends`` is relative to its directory.

    Returns:
        dict[str, Any]: The merged configuration.
    """
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    parent = config.pop("extends", None)
    if parent is None:
        return config
    return deep_merge(load_config(path.parent / parent), config)


@dataclass(frozen=True)
class SetSpec:
    """How one data set is synthesised.

    Attributes:
        name: Set name, also the utterance-id prefix.
        seed: Seed of every random choice in the set.
        size: Number of utterances.
        accents: espeak-ng accent (language) names; ``("",)`` for other engines.
        variants: espeak-ng voice variant names; the voice names of other engines.
        speed_wpm: Inclusive range of espeak-ng speeds (words per minute).
        pitch: Inclusive range of espeak-ng pitch (0-99).
        speed_perturb: sox ``speed`` factors to choose from.
        snr_db: Range of the signal-to-noise ratio of the added noise.
        gain_db: Range of the overall gain.
        pad_s: Range of the extra silence before and after the speech.
        engine: Text-to-speech engine (``espeak-ng``, ``flite``, ``festival``).
        stretch: Range of the duration stretch (flite and festival).
        tempo: Range of the sox ``tempo`` factor.
        pitch_cents: Inclusive range of the sox ``pitch`` shift.
        reverb_prob: Fraction of utterances with reverberation.
        reverb: Inclusive range of the sox reverberance (0-100).
        channels: Channels to choose from, uniformly (``wideband``, ``ulaw``,
            ``gsm``, ``amr``); list one several times to weight it.
        readings: How the words are read, uniformly (``phrase``, ``list``,
            ``words``; see :class:`digits_recipe.synth.Utterance`).
        noise_free_prob: Fraction of utterances without added noise.
        onset_cut_prob: Fraction of utterances whose recordings are cut tight at their start
            (see :class:`digits_recipe.synth.Utterance`'s ``onset_cut``).
        onset_cut: Range of the envelope level (a fraction of its peak) where such a cut falls.
    """

    name: str
    seed: int
    size: int
    accents: tuple[str, ...]
    variants: tuple[str, ...]
    speed_wpm: tuple[int, int]
    pitch: tuple[int, int]
    speed_perturb: tuple[float, ...]
    snr_db: tuple[float, float]
    gain_db: tuple[float, float]
    pad_s: tuple[float, float]
    engine: str = "espeak-ng"
    stretch: tuple[float, float] = (1.0, 1.0)
    tempo: tuple[float, float] = (1.0, 1.0)
    pitch_cents: tuple[int, int] = (0, 0)
    reverb_prob: float = 0.0
    reverb: tuple[int, int] = (0, 0)
    channels: tuple[str, ...] = ("wideband",)
    readings: tuple[str, ...] = ("phrase",)
    noise_free_prob: float = 0.0
    onset_cut_prob: float = 0.0
    onset_cut: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> SetSpec:
        """Build the spec of set ``name`` from a loaded recipe config.

        A set marked ``augmented: true`` takes the config's ``augmentation``
        values over its own.
        """
        entry = config["sets"][name]
        if entry.get("augmented"):
            entry = {**entry, **config["augmentation"]}
        return cls(
            name=name,
            seed=int(config["seeds"][entry["seed_key"]]),
            size=int(entry["size"]),
            accents=tuple(entry.get("accents", [""])),
            variants=tuple(entry["variants"]),
            speed_wpm=_pair(entry["speed_wpm"], int),
            pitch=_pair(entry["pitch"], int),
            speed_perturb=tuple(float(f) for f in entry["speed_perturb"]),
            snr_db=_pair(entry["snr_db"], float),
            gain_db=_pair(entry["gain_db"], float),
            pad_s=_pair(entry["pad_s"], float),
            engine=str(entry.get("engine", cls.engine)),
            stretch=_pair(entry.get("stretch", cls.stretch), float),
            tempo=_pair(entry.get("tempo", cls.tempo), float),
            pitch_cents=_pair(entry.get("pitch_cents", cls.pitch_cents), int),
            reverb_prob=float(entry.get("reverb_prob", cls.reverb_prob)),
            reverb=_pair(entry.get("reverb", cls.reverb), int),
            channels=tuple(entry.get("channels", cls.channels)),
            readings=tuple(entry.get("readings", cls.readings)),
            noise_free_prob=float(entry.get("noise_free_prob", cls.noise_free_prob)),
            onset_cut_prob=float(entry.get("onset_cut_prob", cls.onset_cut_prob)),
            onset_cut=_pair(entry.get("onset_cut", cls.onset_cut), float),
        )


def _pair(values: Any, kind: type) -> tuple[Any, Any]:
    """Return a two-item ``(low, high)`` tuple converted to ``kind``."""
    low, high = values
    return kind(low), kind(high)
