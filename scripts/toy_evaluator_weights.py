"""Rule `toy_evaluator_weights`: train the digit classifier on the training split (it must reach the
configured held-out accuracy) and write its weights: the file config/toy/evaluator.safetensors ships."""

import logging

from dkd.io import rule_log
from dkd.toy.data import load_split
from dkd.toy.evaluator import ClassifierConfig, accuracy, save_classifier_weights, train_classifier

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    config = ClassifierConfig(**sm.params.settings)
    model = train_classifier(config)
    held_out = accuracy(model, load_split("test"))
    logging.info("toy classifier: held-out accuracy %.4f (%s)", held_out, config)
    if held_out < sm.params.min_accuracy:
        raise SystemExit(
            f"toy classifier: held-out accuracy {held_out:.4f} < {sm.params.min_accuracy}; "
            "train longer (toy.classifier.epochs)."
        )
    save_classifier_weights(model, sm.output.weights, config)
