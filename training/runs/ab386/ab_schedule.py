"""Run ``ab386``: the A/B partner of ``urban437`` for the 51 urban and texture photos.

``urban437`` (437 photos, ``--sample-by area --minutes 50``) re-planned its decay twice on a shared machine: at
step 200 to end at step 1,981, and at step 900 (the machine free again) to end at step 2,153 from factor 0.6266.
This replays that schedule exactly (its logged learning rates are matched to the last digit) with the same seed,
crop size, recipe, augmentation, sampling and start weights, on the 386 photos the run had before the 51 were
added, so the two runs differ in the training photos only. Run from the repository root with ``BANET_PHOTO_ROOT``
holding the 386 photos (an ``get_photos.sh --extract`` folder without the ten packages added last; the run's
history records the photo set's hash, which must be ``b9b75d41...``, ``area386``'s):

    python training/runs/ab386/ab_schedule.py
"""

import logging
from dataclasses import replace
from pathlib import Path

import training.train as T
from banet.defaults import DEFAULT_CONFIG
from training.evaluate import quick_evaluator

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
config = T.TrainConfig(model=DEFAULT_CONFIG, steps=2153, batch=4, crop=192, lr=2e-5, warmup=200, seed=0,
                       recipe="do-no-harm", init_steps=33000, augment=True, sample_by="area")
first = replace(config, steps=1981, replan_step=200, replan_factor=1.0)  # urban437's first re-plan
second = replace(config, replan_step=900, replan_factor=T.learning_rate_factor(900, first))  # its second
plain = T.learning_rate_factor


def urban437_schedule(step: int, _config: T.TrainConfig) -> float:
    return plain(step, second if step >= 900 else first if step >= 200 else config)


T.learning_rate_factor = urban437_schedule  # no --minutes: nothing re-plans; this schedule is the whole plan
T.train(config, Path("training/runs/ab386"), max_minutes=60, evaluate_fn=quick_evaluator(26), precision="auto",
        init_from=Path("banet/weights/banet_default.safetensors"))
