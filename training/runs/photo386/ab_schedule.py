"""Run ``photo386``: the A/B partner of ``area386`` for ``--sample-by``.

``area386`` was started with ``--minutes 55`` and re-planned its decay at step 100 (the machine was shared), so
its schedule cannot be typed on the command line. This replays that stored schedule exactly (warm-up to step
100, then linear from factor 0.505 to the floor at step 1254; same seed, crops, recipe, augmentation and start
weights) with uniform photo sampling, so the two runs differ in that one setting (the values below are
``area386``'s stored configuration, with ``sample_by`` changed). Run from the repository root with the photos in
place (``BANET_PHOTO_ROOT``):

    python training/runs/photo386/ab_schedule.py
"""

import logging
from pathlib import Path

from banet.defaults import DEFAULT_CONFIG
from training.evaluate import quick_evaluator
from training.train import TrainConfig, train

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
config = TrainConfig(model=DEFAULT_CONFIG, steps=1254, batch=4, crop=192, lr=2e-5, warmup=200, seed=0,
                     recipe="do-no-harm", init_steps=33000, augment=True, sample_by="photo", minutes=55.0,
                     replan_step=100, replan_factor=0.505)
train(config, Path("training/runs/photo386"), max_minutes=60, evaluate_fn=quick_evaluator(26), precision="auto",
      init_from=Path("banet/weights/banet_default.safetensors"))
