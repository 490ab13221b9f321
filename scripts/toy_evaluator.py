"""Rule `toy_evaluator`: the evaluator folder from the digit classifier's weights (toy.evaluator_weights:
the shipped file, or one retrained by the rule toy_evaluator_weights), which must reach the configured
accuracy on the held-out split."""

import logging
from pathlib import Path

from dkd.io import rule_log
from dkd.provenance import file_sha256
from dkd.toy.data import load_split
from dkd.toy.evaluator import accuracy, load_classifier_weights, save_classifier

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    model = load_classifier_weights(sm.input.weights)
    held_out = accuracy(model, load_split("test"))
    logging.info("toy classifier %s: held-out accuracy %.4f", sm.input.weights, held_out)
    if held_out < sm.params.min_accuracy:
        raise SystemExit(
            f"toy classifier {sm.input.weights}: held-out accuracy {held_out:.4f} < {sm.params.min_accuracy}; "
            "retrain it (rule toy_evaluator_weights, toy.classifier.epochs)."
        )
    source = {"weights": str(sm.input.weights), "weights_sha256": file_sha256(sm.input.weights)}
    save_classifier(model, Path(sm.output.info).parent, accuracy=held_out, **source)
