"""A batch-normalization check-up for any Keras model (issue 21): ``examine(model, x) -> Report``.

``examine`` reads a model's BN layers, walks its graph (``Sequential``, functional and nested
models, Keras applications) and, given data, runs the model on it once, recording what every BN
layer receives. Each problem it finds is a :class:`Finding`: a rule id, a severity, the layer's
path inside nested models (``"resnet50/conv2_block1_1_bn"``; ``""`` for the whole model), the
numbers measured, a fix and the chapter of the book that explains it. The :class:`Report` prints
as a plain-text table, renders as HTML in Jupyter and converts to JSON.

The rules, and exactly when each one fires:

========================= ======== =============================================================
rule                      severity fires when
========================= ======== =============================================================
batch-dependent-inference error    (x) in inference mode, the outputs of the first
                                   ``PROBES`` examples run one at a time differ from their
                                   outputs inside a batch of up to ``CHUNK`` examples by more
                                   than ``BATCH_DEPENDENCE_TOLERANCE`` (1e-4) of the output
                                   scale (the largest absolute output in that batch). The
                                   layer is a BN layer that was called with ``training=True``
                                   during the inference pass, else the innermost custom layer
                                   that is batch-dependent on its own inputs, else ``""``.
untrained-statistics      error    moving mean and variance exactly at their initial values
                                   (0 and 1) in every channel, while gamma or beta have left
                                   theirs (the initialisers' constants; 1 and 0 by default).
stale-statistics          warning  (x) in some channel, with at least ``STALE_MIN_VALUES`` (32)
                                   values per channel in x: ``|moving mean - mean|`` >
                                   ``STALE_MEAN_SHIFT`` (0.5) standard deviations, or (moving
                                   variance + eps) / (variance + eps) outside
                                   ``STALE_VARIANCE_RATIO`` ([0.5, 2]); mean and variance are
                                   those of the layer's inputs over x, the model as it is, in
                                   inference mode (large feature maps sampled at a fixed
                                   spatial stride: at most ``SAMPLE_VALUES`` values per channel
                                   and chunk of ``CHUNK`` examples; the evidence gives the
                                   stride). With y: accuracy before and after recalibration
                                   (the model is put back as it was).
zero-variance             error    a moving variance at or below ``ZERO_VARIANCE`` (1e-6) in
                                   some channel. With x, if those channels are constant in x
                                   as well (input variance at or below 1e-6), the finding is
                                   a note: nothing is amplified.
nan-statistics            error    NaN or inf in any BN weight.
slow-momentum             warning  (training_steps) momentum ** training_steps >
                                   ``MOMENTUM_LEFT`` (0.05): more than 5 % of the initial
                                   moving statistics is left after training (trainable BN).
trailing-batch-of-one     warning  (batch_size, x) len(x) % batch_size is between 1 and
                                   ``TRAILING_BATCH`` - 1 (7): the last batch of each epoch
                                   has fewer than 8 examples (x is taken as the training set).
bias-before-bn            note     a Dense or convolution with a bias and no activation
                                   feeds a BN layer directly (BN's beta makes the bias
                                   redundant).
wrong-axis                error    BN's axis is not the channel axis of the layer that feeds
                                   it (through activations, dropout and element-wise merges):
                                   ``data_format`` for convolutions, pooling and padding, the
                                   last axis for Dense.
dropout-before-bn         warning  a Dropout (or SpatialDropout, AlphaDropout,
                                   GaussianDropout) feeds a BN layer, directly or through
                                   activations and at most one Dense or convolution. With x:
                                   the ratio of the BN input's variance in inference mode to
                                   that in training mode (Dropout on, BN on its moving
                                   statistics), per channel, median and range.
float16-statistics        error    a BN variable in a float type narrower than float32
                                   (float16, bfloat16).
small-batch               warning  (batch_size) fewer than ``SMALL_BATCH`` (8) examples per
                                   training batch, with a trainable BN layer.
frozen-but-training       warning  a trainable BN layer after a frozen Dense or convolution,
                                   or inside a model (or nested model) all of whose other
                                   weighted layers are frozen, or under a frozen parent.
unfoldable                note     a BN layer that cannot be folded into the layer before it
                                   (chapter 9): it does not directly follow a Dense or
                                   convolution, follows one with a non-linear activation, or
                                   follows one whose output also feeds another layer.
========================= ======== =============================================================

The measured rules share one inference pass over x (chunks of ``CHUNK`` examples) plus one call
per probe example; dropout-before-bn adds one training-mode pass when a Dropout feeds a BN
layer, and stale-statistics with y one more pass (recalibrated); a model without BN, ``Lambda``
or custom layers is not run at all (Keras' other layers never mix the examples of a batch at
inference). Large inputs (more than
``COMPILE_ABOVE`` input values) run through one ``tf.function``, traced once. The model is left
exactly as it was: every non-trainable variable is put back after the passes.

Command line: ``python -m bnbook.doctor MODEL.keras [--data FILE] [--labels FILE]
[--batch-size N] [--steps N] [--json]``; exit 0 without error-level findings, 1 with one, 2 on bad
input. :func:`bench_resnet50` times ``examine`` on ``keras.applications.ResNet50(weights=None)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import inspect
import json
import math
import os
import sys
import textwrap
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from .statistics import bn_input_statistics, bn_layers, merge_moments

__all__ = ["examine", "Report", "Finding", "DataError", "RULES", "main", "bench_resnet50"]

BatchNorm = keras.layers.BatchNormalization

# --- thresholds (the module docstring says how each is used) ------------------------------------
BATCH_DEPENDENCE_TOLERANCE = 1e-4   # relative to the largest absolute output of the batch
PROBES = 4                          # examples run one at a time
CHUNK = 64                          # examples per inference call
STALE_MEAN_SHIFT = 0.5              # in standard deviations of the layer's inputs
STALE_VARIANCE_RATIO = (0.5, 2.0)   # (moving variance + eps) / (variance + eps)
STALE_MIN_VALUES = 32               # values per channel needed to judge a layer
ZERO_VARIANCE = 1e-6
MOMENTUM_LEFT = 0.05
SMALL_BATCH = 8
TRAILING_BATCH = 8
EXACT_RECALIBRATION_MAX_LAYERS = 8  # above: recalibrate from the one pass, all layers at once
COMPILE_ABOVE = 1_000_000           # input values in x above which the passes run compiled
SAMPLE_VALUES = 1024                # values per channel and chunk above which maps are sampled

SEVERITIES = ("error", "warning", "note")

# rule -> (severity, chapter, fix)
RULES = {
    "batch-dependent-inference": (
        "error", "chapter 4: training mode and inference mode (04_keras_layer.ipynb); "
        "chapter 6: debugging, training=True left on (06_conv_resnets.ipynb)",
        "In inference mode an example's output must not depend on its batch mates: do not pass "
        "training=True to BN inside the model, and let custom layers use moving statistics "
        "when training is False."),
    "untrained-statistics": (
        "error", "chapter 5: the classic bug, nobody runs the update ops (05_tf1_graphs.ipynb)",
        "The moving statistics were never updated while gamma and beta trained: call the model "
        "with training=True in the training step (or run the update ops), or recalibrate with "
        "bnbook.recalibrate_bn."),
    "stale-statistics": (
        "warning", "chapter 6: debugging, moving statistics that have not caught up, and "
        "recalibration (06_conv_resnets.ipynb)",
        "The moving statistics are far from those of the layer's inputs: recalibrate them on "
        "training data (bnbook.recalibrate_bn), train longer, or lower the momentum."),
    "zero-variance": (
        "error", "chapter 1: what epsilon does (01_transform.ipynb); chapter 6: a trailing "
        "batch of one (06_conv_resnets.ipynb)",
        "A moving variance near 0 divides inference inputs by about sqrt(epsilon): find the "
        "batches that had a constant channel (a trailing batch of one), then recalibrate."),
    "nan-statistics": (
        "error", "chapter 1: what epsilon does, one NaN spreads through everything "
        "(01_transform.ipynb)",
        "A BN weight is NaN or infinite, so every output it touches is too: find the step "
        "where training diverged, restore a checkpoint from before it and recalibrate."),
    "slow-momentum": (
        "warning", "chapter 3: the decay and the length of training (03_test_time.ipynb)",
        "Too few steps for this momentum: the moving statistics still hold much of their "
        "initial values. Lower the momentum (to below 0.05 ** (1 / steps)), train longer, or "
        "recalibrate."),
    "trailing-batch-of-one": (
        "warning", "chapter 6: a trailing batch of one in fit (06_conv_resnets.ipynb)",
        "The last batch of every epoch is tiny, and BN takes its statistics from it: drop it "
        "(drop_remainder=True) or pick a batch size that divides the number of examples."),
    "bias-before-bn": (
        "note", "chapter 1: a bias before BN is redundant (01_transform.ipynb); chapter 4: "
        "where to put BN, and use_bias=False (04_keras_layer.ipynb)",
        "BN subtracts the mean, so the bias of the layer before it does nothing: build that "
        "layer with use_bias=False (BN's beta does the bias's job)."),
    "wrong-axis": (
        "error", "chapter 4: a batch of one, and the axis argument (04_keras_layer.ipynb)",
        "BN normalises each entry of its axis separately; it must be the channel axis: pass "
        "axis=1 after channels_first layers, axis=-1 after channels_last and Dense layers."),
    "dropout-before-bn": (
        "warning", "chapter 3: inference must see the statistics training saw "
        "(03_test_time.ipynb); Li et al., 2019 (https://arxiv.org/abs/1801.05134)",
        "Dropout changes the variance of BN's inputs between training and inference (variance "
        "shift): move Dropout after the last BN layer, or recalibrate BN with Dropout off."),
    "float16-statistics": (
        "error", "chapter 6: mixed precision (06_conv_resnets.ipynb)",
        "BN's moving statistics need float32: use the 'mixed_float16' policy (float32 "
        "variables) instead of dtype='float16' on BN layers."),
    "small-batch": (
        "warning", "chapter 8: small batches, and what replaces BN there "
        "(08_small_batches.ipynb)",
        "With fewer than 8 examples per batch BN's statistics are noisy and unlike the "
        "moving ones: use GroupNormalization or BatchNormalization(renorm=True), or a larger "
        "batch."),
    "frozen-but-training": (
        "warning", "chapter 4: trainable=False, frozen statistics, and fine-tuning "
        "(04_keras_layer.ipynb)",
        "The layers around this BN layer are frozen but it is not: in fit it uses batch "
        "statistics and moves its moving ones. Set trainable=False on BN layers too "
        "(base.trainable = False freezes them all)."),
    "unfoldable": (
        "note", "chapter 9: folding BN into the layer before it (09_devices_deployment.ipynb)",
        "This BN layer cannot be folded into the layer before it for deployment, so it costs "
        "a multiply and an add at inference; place it right after a Dense or convolution "
        "without activation if that matters."),
}
_RULE_ORDER = {rule: k for k, rule in enumerate(RULES)}


class DataError(ValueError):
    """The data does not fit the model (shape, length, structure), or a file cannot be used."""


# --- findings and the report ---------------------------------------------------------------------

def _plain(value):
    """A JSON-safe plain value: Python ints, floats (6 significant digits, non-finite ones as
    strings), bools and strings."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return float(f"{value:.6g}")
    if value is None:
        return None
    return str(value)


@dataclasses.dataclass
class Finding:
    """One problem: ``rule`` id, ``severity`` ("error", "warning" or "note"), ``layer`` (its path
    inside nested models, ``""`` for the whole model), ``evidence`` (the numbers measured, plain
    JSON values), ``fix`` and ``chapter`` (where the book explains it, with the notebook)."""

    rule: str
    severity: str
    layer: str
    evidence: dict
    fix: str
    chapter: str

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "layer": self.layer,
                "evidence": dict(self.evidence), "fix": self.fix, "chapter": self.chapter}


def _finding(rule: str, layer: str, evidence: dict, severity: str | None = None) -> Finding:
    default_severity, chapter, fix = RULES[rule]
    return Finding(rule, severity or default_severity, layer,
                   {key: _plain(value) for key, value in evidence.items()}, fix, chapter)


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _evidence_text(evidence: dict) -> str:
    return ", ".join(f"{key}={_format_value(value)}" for key, value in evidence.items())


class Report:
    """The findings of :func:`examine`, errors first, then warnings, then notes.

    ``print(report)`` prints a plain-text table (rules with many layers show the first few);
    Jupyter shows an HTML table; ``report.to_dict()`` and ``report.to_json()`` give
    ``{"findings": [...]}``. ``report.errors``, ``report.warnings``, ``report.notes`` and
    ``report.has_errors`` select by severity; ``report.by_rule(rule)`` by rule id.
    """

    ROWS_PER_RULE = 5

    def __init__(self, findings, model_name: str = "", seconds: float | None = None):
        self.findings = sorted(findings, key=lambda f: (SEVERITIES.index(f.severity),
                                                        _RULE_ORDER.get(f.rule, len(RULES))))
        self.model_name = model_name
        self.seconds = seconds

    def __len__(self):
        return len(self.findings)

    def __iter__(self):
        return iter(self.findings)

    def _of(self, severity):
        return [finding for finding in self.findings if finding.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self._of("error")

    @property
    def warnings(self) -> list[Finding]:
        return self._of("warning")

    @property
    def notes(self) -> list[Finding]:
        return self._of("note")

    @property
    def has_errors(self) -> bool:
        return bool(self.errors)

    def by_rule(self, rule: str) -> list[Finding]:
        return [finding for finding in self.findings if finding.rule == rule]

    @property
    def rules(self) -> set[str]:
        return {finding.rule for finding in self.findings}

    def to_dict(self) -> dict:
        return {"findings": [finding.to_dict() for finding in self.findings]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        counts = [(len(self._of(s)), s) for s in SEVERITIES]
        parts = [f"{n} {s}{'s' if n != 1 else ''}" for n, s in counts if n]
        return ", ".join(parts) if parts else "no findings"

    def _groups(self):
        groups = []
        for finding in self.findings:
            if groups and groups[-1][0].rule == finding.rule \
                    and groups[-1][0].severity == finding.severity:
                groups[-1].append(finding)
            else:
                groups.append([finding])
        return groups

    def __str__(self) -> str:
        title = f"BN check-up of {self.model_name!r}" if self.model_name else "BN check-up"
        lines = [f"{title}: {self.summary()}"]
        if not self.findings:
            return lines[0]
        shown = []
        for group in self._groups():
            rows = [(f.severity, f.rule, f.layer or "(whole model)", _evidence_text(f.evidence))
                    for f in group[:self.ROWS_PER_RULE]]
            if len(group) > self.ROWS_PER_RULE:
                rows.append(("", "", f"... and {len(group) - self.ROWS_PER_RULE} more layers",
                             ""))
            shown.append((group[0], rows))
        widths = [max(len(header), *(len(row[k]) for _, rows in shown for row in rows))
                  for k, header in enumerate(("severity", "rule", "layer"))]
        widths[2] = min(widths[2], 48)

        def line(cells):
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) \
                + "  " + cells[3]

        lines += ["", line(("severity", "rule", "layer", "evidence")),
                  line(("-" * widths[0], "-" * widths[1], "-" * widths[2], "-" * 8))]
        indent = " " * (widths[0] + 2)
        for first, rows in shown:
            lines += [line(row).rstrip() for row in rows]
            lines += textwrap.wrap(f"fix: {first.fix}", 100, initial_indent=indent,
                                   subsequent_indent=indent + "     ")
            lines += textwrap.wrap(f"see: {first.chapter}", 100, initial_indent=indent,
                                   subsequent_indent=indent + "     ")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Report {self.model_name!r}: {self.summary()}>"

    def _repr_html_(self) -> str:
        escape = html.escape
        title = f"BN check-up of {self.model_name}" if self.model_name else "BN check-up"
        parts = [f"<p><strong>{escape(title)}</strong>: {escape(self.summary())}</p>"]
        if self.findings:
            parts.append("<table><thead><tr><th>severity</th><th>rule</th><th>layer</th>"
                         "<th>evidence</th><th>fix</th><th>chapter</th></tr></thead><tbody>")
            for f in self.findings:
                cells = (f.severity, f.rule, f.layer or "(whole model)",
                         _evidence_text(f.evidence), f.fix, f.chapter)
                parts.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
            parts.append("</tbody></table>")
        return "".join(parts)


# --- the model's layers and graph --------------------------------------------------------------

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
          keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
          keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
          keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_LINEAR = (keras.layers.Dense,) + _CONVS
_ELEMENTWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
                keras.layers.ELU, keras.layers.PReLU, keras.layers.Softmax,
                keras.layers.Identity, keras.layers.GaussianNoise,
                keras.layers.ActivityRegularization)
_DROPOUTS = (keras.layers.Dropout, keras.layers.AlphaDropout, keras.layers.GaussianDropout)
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
           keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)


def _children(layer):
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _layer_tree(model):
    """(layer, path, ancestors) for every layer inside ``model`` (each once, depth first, in
    the model's order); the path joins layer names with "/" below ``model``."""
    found, seen = [], {id(model)}

    def visit(layer, prefix, ancestors):
        for child in _children(layer):
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            found.append((child, path, ancestors))
            visit(child, path, ancestors + (child,))

    visit(model, "", (model,))
    return found


class _Call:
    """One call of a leaf layer in the model's graph: the layers that produce each input
    (``inputs``: a list per input tensor; ``None`` when the graph is unknown) and consumers."""

    __slots__ = ("layer", "path", "inputs", "consumers")

    def __init__(self, layer, path, inputs):
        self.layer, self.path, self.inputs, self.consumers = layer, path, inputs, []


def _is_functional(model) -> bool:
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")


def _graph_calls(model):
    """Every leaf-layer call of ``model``, nested models opened, with producers and consumers:
    ``Sequential`` models by the order of their layers, functional ones by their nodes.
    Layers inside subclassed models and custom layers get ``inputs=None`` (unknown)."""
    calls = []

    def walk(net, prefix, input_feeds):
        def path_of(layer):
            return f"{prefix}/{layer.name}" if prefix else layer.name

        def open_or_add(layer, feeds):
            if isinstance(layer, keras.Sequential) or _is_functional(layer):
                return walk(layer, path_of(layer), feeds)
            if isinstance(layer, keras.Model):            # subclassed: graph unknown
                for inner, path, _ in _layer_tree(layer):
                    calls.append(_Call(inner, f"{path_of(layer)}/{path}", None))
            call = _Call(layer, path_of(layer), feeds)
            calls.append(call)
            return None                                    # every output comes from `call`

        if isinstance(net, keras.Sequential):
            feeds = input_feeds[0] if input_feeds else []
            for layer in net.layers:
                if isinstance(layer, keras.layers.InputLayer):
                    continue
                outputs = open_or_add(layer, [feeds])
                feeds = outputs[0] if outputs else [calls[-1]]
            return [feeds]
        tensors = {id(t): feeds for t, feeds in zip(keras.tree.flatten(net.inputs), input_feeds)}
        for depth in sorted(net._nodes_by_depth, reverse=True):
            for node in net._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input or isinstance(op, keras.layers.InputLayer):
                    continue
                feeds = [tensors.get(id(t), []) for t in node.input_tensors]
                outputs = open_or_add(op, feeds)
                for k, tensor in enumerate(node.outputs):
                    tensors[id(tensor)] = (outputs[k] if outputs and k < len(outputs)
                                           else [calls[-1]])
        return [tensors.get(id(t), []) for t in keras.tree.flatten(net.outputs)]

    if isinstance(model, keras.Sequential) or _is_functional(model):
        try:
            walk(model, "", [[] for _ in keras.tree.flatten(model.inputs)]
                 if _is_functional(model) else [[]])
        except (AttributeError, ValueError):               # e.g. a Sequential never built
            calls = []
    else:
        for layer, path, _ in _layer_tree(model):
            calls.append(_Call(layer, path, None))
    for call in calls:
        for feeds in call.inputs or []:
            for producer in feeds:
                producer.consumers.append(call)
    return calls


def _producer(call):
    """(known, producer call or None for a model input) of a call's first input."""
    if call.inputs is None:
        return False, None
    if not call.inputs or not call.inputs[0]:
        return True, None
    return True, call.inputs[0][0]


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def _bn_ndim(layer) -> int | None:
    spec = getattr(layer, "input_spec", None)
    return getattr(spec, "ndim", None)


def _channel_axis(call, ndim: int):
    """(axis, the call that decides it) for the tensor a call receives, or (None, None)."""
    known, producer = _producer(call)
    for _ in range(100):
        if producer is None:
            return None, None
        layer = producer.layer
        if isinstance(layer, BatchNorm):
            return layer.axis % ndim, producer
        if isinstance(layer, keras.layers.Dense):
            return ndim - 1, producer
        data_format = getattr(layer, "data_format", None)
        if data_format in ("channels_first", "channels_last"):
            return (1 if data_format == "channels_first" else ndim - 1), producer
        if not isinstance(layer, _ELEMENTWISE + _DROPOUTS + _MERGES):
            return None, None
        known, producer = _producer(producer)
    return None, None


def _initial_constant(initializer):
    if isinstance(initializer, keras.initializers.Ones):
        return 1.0
    if isinstance(initializer, keras.initializers.Zeros):
        return 0.0
    if isinstance(initializer, keras.initializers.Constant):
        return float(np.asarray(initializer.value))
    return None


# --- static rules --------------------------------------------------------------------------------

def _weight_rules(layer, path, training_steps):
    findings = []
    if not getattr(layer, "built", False) or not hasattr(layer, "moving_mean"):
        return findings
    weights = {w.name: w for w in layer.weights}
    bad_dtypes = {name: str(w.dtype) for name, w in weights.items()
                  if str(w.dtype) in ("float16", "bfloat16") or str(w.dtype).startswith("float8")}
    if bad_dtypes:
        findings.append(_finding("float16-statistics", path, {
            "variables": ", ".join(bad_dtypes), "variable_dtype": next(iter(bad_dtypes.values())),
            "compute_dtype": layer.compute_dtype}))
    values = {name: np.asarray(w.numpy(), dtype=np.float64) for name, w in weights.items()}
    non_finite = {name: int(np.sum(~np.isfinite(v))) for name, v in values.items()}
    if any(non_finite.values()):
        findings.append(_finding("nan-statistics", path, {
            "variables": ", ".join(name for name, n in non_finite.items() if n),
            "non_finite_values": sum(non_finite.values()),
            "values": sum(v.size for v in values.values())}))
    mean, variance = values["moving_mean"], values["moving_variance"]
    low = np.isfinite(variance) & (variance <= ZERO_VARIANCE)
    if low.any():
        findings.append(_finding("zero-variance", path, {
            "channels": int(low.sum()), "of_channels": variance.size,
            "min_moving_variance": float(variance[low].min()), "threshold": ZERO_VARIANCE,
            "epsilon": layer.epsilon,
            "amplification": 1.0 / math.sqrt(max(float(variance[low].min()), 0.0)
                                              + layer.epsilon)}))
    mean0 = _initial_constant(layer.moving_mean_initializer)
    variance0 = _initial_constant(layer.moving_variance_initializer)
    mean0 = 0.0 if mean0 is None else mean0
    variance0 = 1.0 if variance0 is None else variance0
    if np.all(mean == mean0) and np.all(variance == variance0):
        moved = {}
        for name, initializer in (("gamma", layer.gamma_initializer),
                                  ("beta", layer.beta_initializer)):
            start = _initial_constant(initializer)
            if name in values and start is not None and np.all(np.isfinite(values[name])):
                moved[name] = float(np.max(np.abs(values[name] - start)))
        if any(change > 0 for change in moved.values()):
            findings.append(_finding("untrained-statistics", path, {
                "moving_mean": mean0, "moving_variance": variance0,
                **{f"max_{name}_change": change for name, change in moved.items()}}))
    if training_steps is not None and layer.trainable and 0 < layer.momentum < 1:
        left = layer.momentum ** training_steps
        if left > MOMENTUM_LEFT:
            findings.append(_finding("slow-momentum", path, {
                "momentum": layer.momentum, "training_steps": int(training_steps),
                "initial_weight_left": left, "threshold": MOMENTUM_LEFT,
                "steps_needed": math.ceil(math.log(MOMENTUM_LEFT) / math.log(layer.momentum))}))
    return findings


def _frozen_rules(tree, calls_of, paths):
    """frozen-but-training: a trainable BN after a frozen Dense/conv, under a frozen parent, or
    in a model whose other weighted layers are all frozen."""
    findings, flagged = [], set()

    def flag(layer, evidence):
        if id(layer) not in flagged:
            flagged.add(id(layer))
            findings.append(_finding("frozen-but-training", paths[id(layer)], evidence))

    for layer, _, ancestors in tree:
        if not isinstance(layer, BatchNorm) or not layer.trainable:
            continue
        for call in calls_of.get(id(layer), []):
            known, producer = _producer(call)
            while producer is not None and isinstance(producer.layer, _ELEMENTWISE):
                known, producer = _producer(producer)
            if producer is not None and isinstance(producer.layer, _LINEAR) \
                    and not producer.layer.trainable:
                flag(layer, {"frozen_producer": paths.get(id(producer.layer), producer.path)})
        frozen_parent = next((a for a in ancestors[1:] if not a.trainable), None)
        if frozen_parent is not None:
            flag(layer, {"frozen_parent": paths[id(frozen_parent)]})
    # models (the root and every nested model) whose non-BN weighted layers are all frozen
    scopes = [""] + [path for layer, path, _ in tree if isinstance(layer, keras.Model)]
    for scope_path in scopes if tree else []:
        inside = [entry for entry in tree
                  if (scope_path == "" or entry[1].startswith(scope_path + "/"))]
        leaves = [layer for layer, _, _ in inside if not _children(layer) and layer.weights]
        others = [layer for layer in leaves if not isinstance(layer, BatchNorm)]
        if others and not any(layer.trainable for layer in others):
            for layer in leaves:
                if isinstance(layer, BatchNorm) and layer.trainable:
                    flag(layer, {"frozen_layers_in_model": len(others),
                                 "model": scope_path or "(whole model)"})
    return findings


def _graph_rules(bn_entries, calls_of, paths):
    findings = []
    for layer, path in bn_entries:
        reported = set()
        for call in calls_of.get(id(layer), []):
            known, producer = _producer(call)
            if not known:
                continue
            source = producer.layer if producer is not None else None
            source_path = paths.get(id(source), producer.path) if producer is not None else ""
            linear = source is not None and isinstance(source, _LINEAR)
            activation = _activation_name(source) if linear else "linear"
            # bias-before-bn
            if linear and activation == "linear" and getattr(source, "use_bias", False) \
                    and "bias" not in reported:
                reported.add("bias")
                bias = getattr(source, "bias", None)
                findings.append(_finding("bias-before-bn", path, {
                    "producer": source_path, "producer_class": type(source).__name__,
                    "bias_units": int(np.prod(bias.shape)) if bias is not None else 0}))
            # wrong-axis
            ndim = _bn_ndim(layer)
            if ndim and "axis" not in reported:
                axis, decider = _channel_axis(call, ndim)
                if axis is not None and axis != layer.axis % ndim:
                    reported.add("axis")
                    findings.append(_finding("wrong-axis", path, {
                        "bn_axis": layer.axis, "channel_axis": axis, "input_ndim": ndim,
                        "decided_by": paths.get(id(decider.layer), decider.path),
                        "data_format": getattr(decider.layer, "data_format", None) or "dense"}))
            # unfoldable
            if "fold" not in reported:
                reason = None
                if source is None:
                    reason = "it normalises a model input: there is no layer before it"
                elif not linear:
                    reason = f"it follows a {type(source).__name__}, not a Dense or convolution"
                elif activation != "linear":
                    reason = (f"the {type(source).__name__} before it applies the activation "
                              f"{activation!r} first")
                else:
                    others = [c.path for c in producer.consumers if c.layer is not layer]
                    if others:
                        reason = f"the output of {source_path} also feeds {others[0]}"
                if reason:
                    reported.add("fold")
                    findings.append(_finding("unfoldable", path, {
                        "producer": source_path or "(model input)",
                        "producer_class": type(source).__name__ if source is not None else "",
                        "reason": reason}))
            # dropout-before-bn
            if "dropout" not in reported:
                through, walker = [], producer
                for _ in range(20):
                    if walker is None:
                        break
                    inner = walker.layer
                    if isinstance(inner, _DROPOUTS):
                        if getattr(inner, "rate", 0):
                            reported.add("dropout")
                            findings.append(_finding("dropout-before-bn", path, {
                                "dropout": paths.get(id(inner), walker.path),
                                "rate": float(inner.rate),
                                "through": ", ".join(through) or "(directly)"}))
                        break
                    if isinstance(inner, _LINEAR) and not through:
                        through.append(paths.get(id(inner), walker.path))
                    elif not isinstance(inner, _ELEMENTWISE):
                        break
                    walker = _producer(walker)[1]
    return findings


# --- data ----------------------------------------------------------------------------------------

def _leaves(x):
    return keras.tree.flatten(x)


def _length(x) -> int:
    return len(_leaves(x)[0])


def _slice(x, start, stop):
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def _as_inputs(model, x):
    """x with float32 arrays (integer, bool and float64 arrays cast), checked against the
    model's inputs where they are known; raises DataError if it does not fit."""
    try:
        specs = keras.tree.flatten(model.inputs)
    except (AttributeError, ValueError):
        specs = None
    floats = not specs or all(str(spec.dtype).startswith("float") for spec in specs)

    def cast(a):
        a = np.asarray(a)
        if floats and a.dtype != np.float32 and a.dtype.kind in "biuf":
            return a.astype(np.float32)
        return a

    x = keras.tree.map_structure(cast, x)
    leaves = _leaves(x)
    if not leaves or any(a.ndim == 0 for a in leaves):
        raise DataError("the data holds no array with a batch axis")
    if len({len(a) for a in leaves}) != 1 or len(leaves[0]) == 0:
        raise DataError("the data's arrays are empty or of different lengths")
    if specs and isinstance(x, np.ndarray):
        if len(specs) != 1:
            raise DataError(f"the model takes {len(specs)} inputs; the data is one array")
        shape = tuple(specs[0].shape)
        fits = x.ndim == len(shape) and all(s is None or s == d for s, d in
                                            zip(shape[1:], x.shape[1:]))
        if not fits:
            raise DataError(f"data of shape {x.shape} does not fit the model's input shape "
                            f"{shape}")
    return x


# --- the measured pass ---------------------------------------------------------------------------

def _accepts(function, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _spatial_stride(layer, shape) -> int:
    """The stride along each spatial axis at which a BN layer's inputs are sampled: the
    smallest that leaves at most ``SAMPLE_VALUES`` values per channel in a chunk of ``CHUNK``
    examples (1: every value; inputs without spatial axes are never sampled)."""
    ndim = len(shape)
    spatial = [shape[a] for a in range(1, ndim) if a != layer.axis % ndim]
    if not spatial or any(size is None for size in spatial):
        return 1
    stride = 1
    while CHUNK * math.prod(-(-size // stride) for size in spatial) > SAMPLE_VALUES:
        stride += 1
    return stride


def _batch_moments(layer, inputs, mask, stride=1):
    """(count, mean, variance) per channel of one call's inputs, in float32, every ``stride``-th
    position along each spatial axis."""
    values = tf.cast(inputs, tf.float32)
    ndim = values.shape.rank
    axes = [a for a in range(ndim) if a != layer.axis % ndim]
    if stride > 1 and mask is None:
        values = values[tuple(slice(None, None, stride) if a in axes and a > 0 else slice(None)
                              for a in range(ndim))]
    if mask is None:
        mean, variance = tf.nn.moments(values, axes)
        count = tf.cast(tf.size(values), tf.float32) / tf.cast(tf.shape(values)[layer.axis],
                                                               tf.float32)
        count = count * tf.ones_like(mean)
    else:
        weights = tf.broadcast_to(tf.expand_dims(tf.cast(mask, tf.float32), -1), tf.shape(values))
        mean, variance = tf.nn.weighted_moments(values, axes, weights)
        count = tf.reduce_sum(weights, axes)
    return count, mean, variance


class _Recorders:
    """Replacements for the ``call`` of every BN layer that record (count, mean, variance) of
    its inputs and whether it was called with ``training=True``; installed for the passes only.
    With ``force_inference`` the BN layers run on their moving statistics whatever they are
    told (the training-mode pass that measures Dropout's variance shift)."""

    def __init__(self, layers):
        self.layers = layers
        self.sink, self.meta, self.strides = [], [], {}
        self.force_inference = False
        self._saved = []

    def install(self):
        for index, layer in enumerate(self.layers):
            self._saved.append((layer, layer.__dict__.get("call")))
            layer.call = self._recorder(index, layer, layer.call)

    def remove(self):
        while self._saved:
            layer, own = self._saved.pop()
            if own is None:
                del layer.call
            else:
                layer.call = own

    def _recorder(self, index, layer, original):
        takes_training, takes_mask = _accepts(original, "training"), _accepts(original, "mask")

        def call(inputs, *args, training=None, mask=None, **kwargs):
            stride = _spatial_stride(layer, tuple(inputs.shape)) if mask is None else 1
            self.strides[index] = stride
            self.meta.append((index, training is True))
            self.sink.extend(_batch_moments(layer, inputs, mask, stride))
            if self.force_inference:
                training = False
            if takes_training:
                kwargs["training"] = training
            if mask is not None and takes_mask:
                kwargs["mask"] = mask
            return original(inputs, *args, **kwargs)

        return call


def _runner(model, recorders, training, compiled: bool, example):
    """The function one pass calls on each chunk: ``model(batch)`` (``training=None``: the way a
    user calls it, which keeps a ``training=True`` written into a functional model's graph) or
    ``model(batch, training=True)``; compiled into one ``tf.function`` if ``compiled``."""
    def run(batch):
        recorders.sink.clear()
        recorders.meta.clear()
        outputs = model(batch) if training is None else model(batch, training=training)
        return keras.tree.flatten(outputs), list(recorders.sink)

    if not compiled:
        return run
    spec = keras.tree.map_structure(
        lambda a: tf.TensorSpec((None,) + tuple(a.shape[1:]), tf.as_dtype(a.dtype)), example)
    return tf.function(run, input_signature=[spec])


class _Moments:
    """(count, mean, M2) per channel, float64, merged over calls (Chan et al.)."""

    def __init__(self):
        self.state = None

    def add(self, count, mean, variance):
        count, mean = np.asarray(count, np.float64), np.asarray(mean, np.float64)
        part = (count, mean, np.asarray(variance, np.float64) * count)
        if self.state is None:
            self.state = part
        else:
            with np.errstate(all="ignore"):
                self.state = merge_moments(self.state, part)

    def mean_variance(self):
        count, mean, m2 = self.state
        with np.errstate(all="ignore"):
            return count, mean, m2 / count


def _pass(run, x, recorders, moments=None, chunk=CHUNK, limit=None, keep_first=False,
          predictions=None):
    """Run ``run`` over x in chunks; merge BN moments into ``moments`` (index -> _Moments);
    return (outputs of the first chunk or None, indices of BN layers called with training=True).
    """
    first, trained = None, set()
    stop = _length(x) if limit is None else min(limit, _length(x))
    for start in range(0, stop, chunk):
        batch = _slice(x, start, min(start + chunk, stop))
        if start == 0:
            try:
                outputs, sink = run(batch)
            except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
                message = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise DataError(f"the model cannot run on the data: {message}") from error
        else:
            outputs, sink = run(batch)
        meta = list(recorders.meta)
        for k, (index, saw_training) in enumerate(meta):
            if saw_training:
                trained.add(index)
            if moments is not None:
                moments.setdefault(index, _Moments()).add(*(t.numpy() for t in sink[3 * k:3 * k + 3]))
        if keep_first and first is None:
            first = [np.asarray(o) for o in outputs]
        if predictions is not None:
            predictions.append(np.asarray(outputs[0]))
    return first, trained


def _relative_difference(batched, singles):
    """Largest |single - batched| over the probes, relative to the largest finite |output| of
    the batch; an output finite in one and not the other counts as infinite."""
    worst, scale = 0.0, 0.0
    for full, alone in zip(batched, singles):
        full = np.asarray(full, np.float64)
        alone = np.asarray(alone, np.float64)
        finite = np.isfinite(full)
        if finite.any():
            scale = max(scale, float(np.max(np.abs(full[finite]))))
        part = full[:len(alone)]
        both = np.isfinite(part) & np.isfinite(alone)
        if np.any(np.isfinite(part) != np.isfinite(alone)):
            return math.inf, scale
        if both.any():
            worst = max(worst, float(np.max(np.abs(part[both] - alone[both]))))
    if worst == 0.0:
        return 0.0, scale
    return worst / scale if scale > 0 else math.inf, scale


def _is_custom(layer) -> bool:
    return not type(layer).__module__.startswith("keras")


def _localize(model, x_small, tree):
    """Paths of the innermost custom layers whose output, on the inputs they get inside the
    model, changes with the batch in inference mode (with the relative difference)."""
    suspects = [(layer, path) for layer, path, _ in tree
                if _is_custom(layer) or isinstance(layer, keras.layers.Lambda)]
    captured, saved = {}, []

    def capture(layer, original):
        def call(inputs, *args, **kwargs):
            if id(layer) not in captured and not args and tf.is_tensor(inputs):
                captured[id(layer)] = inputs
            return original(inputs, *args, **kwargs)
        return call

    try:
        for layer, _ in suspects:
            saved.append((layer, layer.__dict__.get("call")))
            layer.call = capture(layer, layer.call)
        model(x_small, training=False)
    finally:
        for layer, own in reversed(saved):
            if own is None:
                del layer.call
            else:
                layer.call = own
    culprits = []
    for layer, path in suspects:
        inputs = captured.get(id(layer))
        if inputs is None or inputs.shape[0] is None or inputs.shape[0] < 2:
            continue
        try:
            full = keras.tree.flatten(layer(inputs, training=False))
            alone = [np.asarray(o) for o in keras.tree.flatten(layer(inputs[:1], training=False))]
        except Exception:  # noqa: BLE001 - a layer that cannot run alone is not judged
            continue
        difference, _ = _relative_difference([np.asarray(o) for o in full], alone)
        if difference > BATCH_DEPENDENCE_TOLERANCE:
            culprits.append((path, difference))
    paths = [p for p, _ in culprits]
    return [(p, d) for p, d in culprits if not any(q.startswith(p + "/") for q in paths)]


def _labels(y, n_classes):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == n_classes and n_classes > 1:
        return np.argmax(y, axis=1)
    return y.reshape(len(y))


def _set_statistics(layer, mean, variance):
    layer.moving_mean.assign(np.asarray(mean, np.float32))
    layer.moving_variance.assign(np.asarray(variance, np.float32))
    if getattr(layer, "renorm", False):
        layer.moving_stddev.assign(np.sqrt(np.asarray(variance, np.float32)
                                           + np.float32(layer.epsilon)))


def _measured_rules(model, x, y, tree, bn_entries, static, paths):
    """The rules that need data: one inference pass (plus probes), and the extra passes that
    dropout-before-bn and, with labels, stale-statistics need. Puts the model back as it was."""
    findings = []
    n = _length(x)
    layers = [layer for layer, _ in bn_entries]
    if not layers and not any(_is_custom(layer) or isinstance(layer, keras.layers.Lambda)
                              for layer, _, _ in tree):
        return findings      # Keras' own layers other than BN do not mix examples at inference
    before = {i: (layer.moving_mean.numpy().astype(np.float64),
                  layer.moving_variance.numpy().astype(np.float64))
              for i, layer in enumerate(layers)}
    compiled = sum(a.size for a in _leaves(x)) > COMPILE_ABOVE
    saved = [(v, v.numpy()) for v in model.non_trainable_variables]
    recorders = _Recorders(layers)
    moments, trained_bn, predictions = {}, set(), [] if y is not None else None
    try:
        recorders.install()
        try:
            run = _runner(model, recorders, None, compiled, _slice(x, 0, 1))
            first, trained_bn = _pass(run, x, recorders, moments, keep_first=True,
                                      limit=None if layers else CHUNK,
                                      predictions=predictions)
            batch = min(n, CHUNK)
            singles = [run(_slice(x, i, i + 1))[0] for i in range(min(PROBES, batch))] \
                if batch >= 2 else []
            dropout_moments = {}
            dropout_findings = [f for f in static if f.rule == "dropout-before-bn"]
            if dropout_findings:
                recorders.force_inference = True
                run_training = _runner(model, recorders, True, compiled, _slice(x, 0, 1))
                _pass(run_training, x, recorders, dropout_moments)
                recorders.force_inference = False
        finally:
            recorders.remove()
        for variable, value in saved:      # undo whatever training-mode calls changed
            variable.assign(value)

        # batch-dependent-inference
        if singles:
            stacked = [np.concatenate([np.asarray(s[k]) for s in singles])
                       for k in range(len(first))]
            difference, scale = _relative_difference(first, stacked)
            if difference > BATCH_DEPENDENCE_TOLERANCE:
                evidence = {"max_relative_difference": difference, "output_scale": scale,
                            "probes": len(singles), "batch": batch,
                            "tolerance": BATCH_DEPENDENCE_TOLERANCE}
                culprits = [(paths[id(layers[i])], "called with training=True in inference")
                            for i in sorted(trained_bn)]
                if not culprits:
                    culprits = [(p, f"batch-dependent on its own inputs (relative difference "
                                 f"{d:.3g})") for p, d in _localize(model, _slice(x, 0, batch),
                                                                    tree)]
                    for variable, value in saved:
                        variable.assign(value)
                for path, cause in culprits or [("", "not located")]:
                    findings.append(_finding("batch-dependent-inference", path,
                                             dict(evidence, cause=cause)))

        # stale-statistics and the data side of zero-variance and dropout-before-bn
        exact = {i: moments[i].mean_variance() for i in range(len(layers)) if i in moments}
        stale = []
        for i, (count, mean, variance) in exact.items():
            layer = layers[i]
            if count.min() < STALE_MIN_VALUES:
                continue
            moving_mean, moving_variance = before[i]
            eps = layer.epsilon
            with np.errstate(all="ignore"):
                shift = np.abs(moving_mean - mean) / np.sqrt(variance + eps)
                ratio = (moving_variance + eps) / (variance + eps)
            low, high = STALE_VARIANCE_RATIO
            bad = ~(shift <= STALE_MEAN_SHIFT) | ~((ratio >= low) & (ratio <= high))
            if bad.any():
                finite_ratio = ratio[np.isfinite(ratio)]
                stale.append(_finding("stale-statistics", paths[id(layer)], {
                    "channels_off": int(bad.sum()), "of_channels": int(bad.size),
                    "max_mean_shift_in_std": float(np.nanmax(shift)) if np.any(
                        np.isfinite(shift)) else math.inf,
                    "min_variance_ratio": float(finite_ratio.min()) if finite_ratio.size
                    else math.nan,
                    "max_variance_ratio": float(finite_ratio.max()) if finite_ratio.size
                    else math.nan,
                    "values_per_channel": int(count.min()),
                    "spatial_stride": recorders.strides.get(i, 1),
                    "mean_shift_threshold": STALE_MEAN_SHIFT,
                    "variance_ratio_range": f"{low:g} to {high:g}"}))
        if stale and y is not None:
            _recalibrated_accuracy(model, x, y, layers, bn_entries, exact, predictions, stale,
                                   run, saved)
        findings += stale
        index_of = {paths[id(layer)]: i for i, layer in enumerate(layers)}
        for finding in static:
            i = index_of.get(finding.layer)
            if i is None or i not in exact:
                continue
            if finding.rule == "zero-variance":
                variance = exact[i][2]
                low = before[i][1] <= ZERO_VARIANCE
                input_variance = float(np.nanmax(variance[low])) if low.any() else 0.0
                finding.evidence["max_input_variance_in_those_channels"] = _plain(input_variance)
                if input_variance <= ZERO_VARIANCE:
                    finding.severity = "note"
                    finding.evidence["constant_in_data"] = True
            if finding.rule == "dropout-before-bn" and i in dropout_moments:
                _, _, variance_training = dropout_moments[i].mean_variance()
                with np.errstate(all="ignore"):
                    ratios = exact[i][2] / variance_training
                ratios = ratios[np.isfinite(ratios)]
                if ratios.size:
                    finding.evidence.update(
                        variance_ratio_inference_over_training=_plain(np.median(ratios)),
                        variance_ratio_min=_plain(ratios.min()),
                        variance_ratio_max=_plain(ratios.max()))
    finally:
        for variable, value in saved:
            variable.assign(value)
    return findings


def _recalibrated_accuracy(model, x, y, layers, bn_entries, exact, predictions, stale, run,
                           saved):
    outputs = np.concatenate(predictions) if predictions else None
    if outputs is None or outputs.ndim != 2 or outputs.shape[1] < 2:
        for finding in stale:
            finding.evidence["accuracy"] = "not a classifier's output"
        return
    labels = _labels(y, outputs.shape[1])
    accuracy = float(np.mean(np.argmax(outputs, axis=1) == labels))
    listed = bn_layers(model)
    exact_method = (isinstance(x, np.ndarray) and len(listed) <= EXACT_RECALIBRATION_MAX_LAYERS
                    and {id(layer) for layer in listed} == {id(layer) for layer in layers})
    try:
        if exact_method:
            statistics = bn_input_statistics(model, x)
            for layer, mean, variance in zip(listed, statistics[::2], statistics[1::2]):
                _set_statistics(layer, mean, variance)
            method = "exact, layer after layer (bnbook.bn_input_statistics)"
        else:
            for i, (_, mean, variance) in exact.items():
                if np.all(np.isfinite(mean)) and np.all(np.isfinite(variance)):
                    _set_statistics(layers[i], mean, variance)
            method = "one pass, all layers at once"
        after = []
        for start in range(0, _length(x), CHUNK):
            after.append(np.asarray(run(_slice(x, start, start + CHUNK))[0][0]))
        recalibrated = float(np.mean(np.argmax(np.concatenate(after), axis=1) == labels))
    finally:
        for variable, value in saved:
            variable.assign(value)
    for finding in stale:
        finding.evidence.update(accuracy=_plain(accuracy),
                                accuracy_after_recalibration=_plain(recalibrated),
                                recalibration=method)


# --- examine -----------------------------------------------------------------------------------

def examine(model, x=None, *, y=None, batch_size: int | None = None,
            training_steps: int | None = None) -> Report:
    """Check the BN layers of a Keras model; return a :class:`Report` of findings.

    Without data only the static rules run (weights, flags and the graph). With ``x`` (an array,
    or a list or dict of arrays for several inputs) the model also runs on it in inference mode:
    batch-dependent-inference, stale-statistics and the data side of zero-variance and
    dropout-before-bn; ``y`` (integer labels or one-hot) adds accuracies before and after
    recalibration to stale-statistics. ``batch_size`` is the training batch size (small-batch,
    and with ``x`` taken as the training set, trailing-batch-of-one); ``training_steps`` the
    number of training steps (slow-momentum). The model is left unchanged. The module docstring
    lists the rules and their thresholds. Raises :class:`DataError` if the data does not fit.
    """
    start = time.perf_counter()
    if x is not None:
        x = _as_inputs(model, x)
        if y is not None and len(y) != _length(x):
            raise DataError(f"{len(y)} labels for {_length(x)} examples")
        if not model.built:
            try:
                model(_slice(x, 0, 1), training=False)
            except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
                message = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise DataError(f"the model cannot run on the data: {message}") from error
    tree = _layer_tree(model)
    paths = {id(layer): path for layer, path, _ in tree}
    bn_entries = [(layer, path) for layer, path, _ in tree if isinstance(layer, BatchNorm)]
    calls = _graph_calls(model)
    calls_of = {}
    for call in calls:
        calls_of.setdefault(id(call.layer), []).append(call)

    findings = []
    for layer, path in bn_entries:
        findings += _weight_rules(layer, path, training_steps)
    findings += _graph_rules(bn_entries, calls_of, paths)
    findings += _frozen_rules(tree, calls_of, paths)
    trainable_bn = [layer for layer, _ in bn_entries if layer.trainable]
    if batch_size is not None and trainable_bn:
        if batch_size < SMALL_BATCH:
            findings.append(_finding("small-batch", "", {
                "batch_size": int(batch_size), "threshold": SMALL_BATCH,
                "trainable_bn_layers": len(trainable_bn)}))
        if x is not None:
            last = _length(x) % batch_size
            if 0 < last < TRAILING_BATCH:
                findings.append(_finding("trailing-batch-of-one", "", {
                    "examples": _length(x), "batch_size": int(batch_size), "last_batch": last,
                    "threshold": TRAILING_BATCH}))
    if x is not None:
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")     # Keras' "triggered tf.function retracing" for batch sizes
        try:
            findings += _measured_rules(model, x, y, tree, bn_entries, findings, paths)
        finally:
            logger.setLevel(level)
    return Report(findings, getattr(model, "name", ""), time.perf_counter() - start)


# --- benchmark ---------------------------------------------------------------------------------

def bench_resnet50(n_images: int = 128, image_size: int = 224, seed: int = 0) -> float:
    """Seconds :func:`examine` takes on ``keras.applications.ResNet50(weights=None)`` (built
    beforehand, not timed) with ``n_images`` random images of ``image_size`` pixels a side."""
    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3))
    images = np.random.default_rng(seed).normal(
        0.0, 50.0, (n_images, image_size, image_size, 3)).astype(np.float32)
    start = time.perf_counter()
    examine(model, images)
    return time.perf_counter() - start


# --- command line -------------------------------------------------------------------------------

def _load_model(path):
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to load means "not a Keras model"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"{path} is not a Keras model file ({first[:200]})") from None


def _load_array(path, what):
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any failure to read means a bad file
        raise DataError(f"cannot read {what} {path} as .npy or .npz ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "x" not in loaded.files and what == "data":
                raise DataError(f"{path} has no array named 'x' (it has "
                                f"{', '.join(loaded.files) or 'none'})")
            key = "x" if what == "data" else ("y" if "y" in loaded.files else loaded.files[0])
            return loaded[key], (loaded["y"] if what == "data" and "y" in loaded.files
                                 else None)
    return loaded, None


def main(argv=None) -> int:
    """``python -m bnbook.doctor MODEL.keras [--data FILE] [--labels FILE] [--batch-size N]
    [--steps N] [--json]``: print the report; exit 0 (no error-level finding), 1 (at least
    one) or 2 (bad input, with a one-line message on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m bnbook.doctor",
        description="A batch-normalization check-up of a saved Keras model.")
    parser.add_argument("model", help="a saved Keras model (.keras)")
    parser.add_argument("--data", help=".npy array of inputs, or .npz with x (and y)")
    parser.add_argument("--labels", help=".npy array of labels (overrides the .npz's y)")
    parser.add_argument("--batch-size", type=int, help="the training batch size")
    parser.add_argument("--steps", type=int, help="the number of training steps")
    parser.add_argument("--json", action="store_true", help='print {"findings": [...]}')
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise DataError("--batch-size must be at least 1")
        if args.steps is not None and args.steps < 0:
            raise DataError("--steps must not be negative")
        model = _load_model(args.model)
        x = y = None
        if args.data:
            x, y = _load_array(args.data, "data")
        if args.labels:
            y, _ = _load_array(args.labels, "labels")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = examine(model, x, y=y, batch_size=args.batch_size,
                             training_steps=args.steps)
    except DataError as error:
        print(f"bnbook.doctor: {error}".splitlines()[0], file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    return 1 if report.has_errors else 0


if __name__ == "__main__":
    sys.exit(main())
