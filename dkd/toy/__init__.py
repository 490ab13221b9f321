"""The toy benchmark: scikit-learn's handwritten digits, a small pixel-space teacher trained on
them, and a digit classifier that stands in for Inception and CLIP (``config/toy.yaml``)."""
