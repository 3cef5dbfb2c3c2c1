"""What tests, benchmarks and the recipe use to make models; not part of the shipped package.

``publish`` lays out and packs a published bundle; ``random_init`` writes espnet2 ASR
experiments with random weights from a training config; ``recipes`` holds the ESPnet egs2
recipes' model options those experiments are built with (real size, or reduced for tests).
"""
