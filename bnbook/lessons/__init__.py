"""Lesson helpers: one module per chapter, named after the notebook it serves.

``notebooks/NN_<name>.ipynb`` imports ``bnbook.lessons.<name>``; ``data`` (MNIST) and ``plots``
(the figures) are shared by several chapters. These modules build the book's small networks and
experiments; the functions for your own models are in ``bnbook`` itself (the practitioner API).
"""
