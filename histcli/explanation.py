"""Attributions: which marks, at which positions, drive a model's predictions (built on Captum).

Every method explains the quantity ``predict`` reports, in logit space, as a
function of the model's transformed inputs (genes x bins x marks, e.g.
log1p counts): an attribution per gene, bin and mark.

* ``integrated-gradients``: path integral of the gradient from the baseline to
  the gene (``steps`` points); the attributions of a gene sum to the model's
  logit at the gene minus its logit at the baseline (completeness). ReLU
  networks bend along the path, so genes that miss completeness by more than
  1% are integrated again with twice the points (up to 16 times as many).
* ``deeplift``: DeepLift's rescale rule against the baseline (sums to the same
  difference for ReLU networks; recurrent layers are passed by their gradients).
* ``gradient-shap``: expected gradients times (input - baseline) at ``steps``
  random points between the baseline and the gene (a stochastic estimate of
  integrated gradients; seeded, so runs repeat).
* ``saliency``: the signed gradient of the logit at the gene.
* ``occlusion``: the logit minus the logit with one bin of one mark replaced by
  the baseline's value.
* ``attention`` (AttentiveChrome only): the model's own attention weights;
  the attribution of a (bin, mark) is its bin weight times its mark weight, the
  share of the gene's summary it carries (they sum to 1 per gene).

Baselines: ``zeros`` (no reads) or ``cell-mean`` (the mean transformed input
over every gene of the cell being explained).

Mirrored models (trained on genes of unknown orientation) predict the mean of
the logits of a gene and of its bin-reversed copy, so each orientation is
explained on its own (the reversed one against the reversed baseline), its
attributions are mapped back to 5'->3' bins, and the two are averaged; the
result is the attribution of the mirrored prediction itself.

Seed ensembles report the logit of the mean of their members' probabilities.
Gradient and perturbation methods explain that output directly. DeepLift needs
each member's own layers, so each member is explained and the members'
attributions are combined with weights that carry the members' logits through
the ensemble's averaging (integrated gradients of the averaging over the
members' logits): the weights are equal, and the result the mean of the
members' attributions, when the members agree, and the combination keeps
completeness when they do not. Attention weights of an ensemble are the mean of
its members'.

Regression models are explained through their raw output, the standardised
level (level = output x target_scale + target_mean, see histcli.tasks); their
ensembles average the members' outputs, so DeepLift weights each member equally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, TextIO

import numpy as np

from histcli.errors import ChoiceError, EmptySplitError, InputError, MissingExtraError, SettingError
from histcli.registry import Entry
from histcli.sources.common import decoded_bytes, read_bytes, text_lines, utf8_text
from histcli.splits import split_genes
from histcli.store import CellData

log = logging.getLogger("histcli")

METHODS = ("integrated-gradients", "deeplift", "gradient-shap", "saliency", "occlusion", "attention")
BASELINES = ("zeros", "cell-mean")
ATTENTION_ARCHITECTURES = ("attentivechrome",)
#: The methods every architecture gives (attention needs one of ATTENTION_ARCHITECTURES): report's choices.
ANY_MODEL_METHODS = tuple(method for method in METHODS if method != "attention")
GROUPS = {"high": 1, "low": 0}  # summary groups of genes by label
# Rows (genes x integration points) per forward/backward pass: on the CPU larger passes fall
# out of the caches (integrated gradients of the E116 cnn: 15 s per 1,000 genes at 1,024 rows,
# 23 s at 4,096); GPUs take more.
ROWS_PER_PASS = {"cpu": 1024, "cuda": 65536}
GRADIENT_SHAP_SEED = 0
# Integrated gradients: relative completeness error that makes a gene's attributions be redone
# with twice the integration points, at most MAX_STEP_DOUBLINGS times.
COMPLETENESS_TOLERANCE = 0.01
MAX_STEP_DOUBLINGS = 4


def bin_positions(n_bins: int, bin_size: int, tss_offset: int) -> np.ndarray:
    """Centre of each bin in bp relative to the TSS (negative upstream), 5' to 3'."""
    return (np.arange(n_bins) + 0.5) * bin_size - tss_offset


def position_text(position: float) -> str:
    return str(int(position)) if float(position).is_integer() else repr(float(position))


def check_method(entry: Entry, method: str) -> None:
    """Raise a usage error for a method the model cannot give (checked before any work)."""
    if method not in METHODS:
        raise ChoiceError("method", method, METHODS)
    architecture = entry.config["architecture"]
    if method == "attention" and architecture not in ATTENTION_ARCHITECTURES:
        raise SettingError("method", method, f"needs a model with attention ({', '.join(ATTENTION_ARCHITECTURES)}); "
                           f"{entry.name!r} is a {architecture} model: use {', '.join(ANY_MODEL_METHODS[:-1])} or "
                           f"{ANY_MODEL_METHODS[-1]}")


def read_gene_list(source: str, stream: BinaryIO | None = None) -> list[str]:
    """Gene ids, one a line (the first tab-separated field); '#' lines, blank lines and a
    ``gene_id`` header are skipped. A gene given twice is an error naming both lines."""
    import sys

    shown = "<stdin>" if source == "-" else source
    if source == "-":
        # Bytes, decoded as a file's are (a byte-order mark dropped, gzip read, bytes that are not UTF-8 named).
        raw = (stream or sys.stdin.buffer).read()
        lines = text_lines(utf8_text(Path(shown), decoded_bytes(Path(shown), raw)), shown)
    else:
        path = Path(source)
        if path.is_dir():
            raise InputError(shown, "is a folder, expected a file of gene ids")
        # read_bytes reads a pipe (bash's <(...)) once, as it reads a file.
        lines = text_lines(utf8_text(path, read_bytes(path)), shown)
    genes: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        gene = line.split("\t", 1)[0].strip()
        if not gene or gene.startswith("#") or (not genes and gene.lower() == "gene_id"):
            continue
        if gene in first_line:
            raise InputError(shown, f"gene {gene} appears again (first at line {first_line[gene]})", line=number)
        first_line[gene] = number
        genes.append(gene)
    if not genes:
        raise InputError(shown, "no gene ids, expected one gene id a line")
    return genes


def select_genes(cell: CellData, genes: list[str], where: str, source: str) -> np.ndarray:
    """Indices of ``genes`` in ``cell``, in the given order; unknown genes are an error naming them."""
    index = {str(gene): position for position, gene in enumerate(cell.gene_ids)}
    unknown = [gene for gene in genes if gene not in index]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise InputError(source, f"{len(unknown)} of {len(genes)} gene(s) not in {where}: {shown}")
    return np.array([index[gene] for gene in genes], dtype=np.int64)


def require_captum():
    """captum.attr, or a one-line error saying how to install it."""
    try:
        from captum import attr
    except ImportError:
        raise MissingExtraError("captum", "explain", "histcli explain") from None
    return attr


def ensemble_weights(member_logits, member_baseline_logits, steps: int = 200):
    """Weights (genes, members) that carry members' logit changes into the ensemble's.

    The ensemble's logit is ``E(z) = logit(mean(sigmoid(z_i)))``; these are the
    integrated gradients of E along the straight line from the members' logits
    at the baseline to those at the gene, divided by each member's change, so
    that ``sum_i w_i (z_i(x) - z_i(b)) = E(z(x)) - E(z(b))``. When the members
    agree every weight is ``1 / members``.
    """
    import torch
    from torch.nn import functional

    start, end = member_baseline_logits.double(), member_logits.double()
    points = (torch.arange(steps, dtype=torch.float64, device=end.device) + 0.5) / steps
    path = (start + points[:, None, None] * (end - start)).requires_grad_(True)
    combined = (torch.logsumexp(functional.logsigmoid(path), -1) - torch.logsumexp(functional.logsigmoid(-path), -1))
    (gradient,) = torch.autograd.grad(combined.sum(), path)
    return gradient.mean(0)


class Explainer:
    """Attributions of a registry model, batch by batch, on its device.

    ``baseline`` is one (bins, marks) input in the model's transformed space.
    """

    def __init__(self, entry: Entry, method: str, baseline: np.ndarray, *, steps: int = 50, device: str = "cpu",
                 module=None):
        import torch

        check_method(entry, method)
        if method != "attention":
            self.attr = require_captum()
        self.entry = entry
        self.method = method
        self.steps = steps
        self.device = device
        self.mirror = entry.input.mirror
        self.module = module if module is not None else entry.build_module(device)
        self.module.eval()
        self.members = list(getattr(self.module, "members", [self.module]))
        self.is_ensemble = hasattr(self.module, "members")
        self.baseline = torch.as_tensor(np.asarray(baseline, dtype=np.float32), device=device)
        self.rows_per_pass = rows = ROWS_PER_PASS.get(device.split(":")[0], ROWS_PER_PASS["cpu"])
        per_gene = {"integrated-gradients": steps, "gradient-shap": steps,
                    "occlusion": self.baseline.numel()}.get(method, 2)
        self.genes_per_batch = max(1, rows // per_gene)
        self.incomplete = 0  # genes whose integrated gradients still missed completeness

    def batches(self, inputs: np.ndarray) -> Iterator[tuple[int, int]]:
        for start in range(0, len(inputs), self.genes_per_batch):
            yield start, min(len(inputs), start + self.genes_per_batch)

    def attribute(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """``{"attribution": (genes, bins, marks)}``, and for attention also the weights themselves."""
        import torch

        x = torch.as_tensor(np.ascontiguousarray(inputs, dtype=np.float32), device=self.device)
        if self.method == "attention":
            return self._attention(x)
        if self.method != "occlusion":
            x.requires_grad_(True)  # Captum would set it, with a warning each batch
        orientations = [self._oriented(x, self.baseline)]
        if self.mirror:
            orientations.append(self._oriented(x.flip(1), self.baseline.flip(0)).flip(1))
        attribution = torch.stack(orientations).mean(0)
        return {"attribution": attribution.detach().float().cpu().numpy()}

    def _oriented(self, x, baseline):
        """Attributions of the module's logit at ``x`` (one orientation) against ``baseline``."""
        import warnings

        import torch

        # cuDNN refuses the backward pass of a recurrent layer in eval mode, and attributions need the
        # gradients of the eval-mode model (no dropout): on a GPU they run on PyTorch's own kernels.
        with warnings.catch_warnings(), torch.backends.cudnn.flags(enabled=x.device.type != "cuda"):
            # DeepLift announces, every batch, that it hooks the activations for its own use.
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            return self._captum_attribution(x, baseline)

    def _captum_attribution(self, x, baseline):
        import torch

        baselines = baseline.expand_as(x).contiguous()
        if self.method == "deeplift" and self.is_ensemble:
            # DeepLift walks each member's own layers; the averaging of their
            # probabilities is carried by ensemble_weights.
            parts, logits, base_logits = [], [], []
            for member in self.members:
                parts.append(self.attr.DeepLift(member).attribute(x, baselines=baselines))
                with torch.no_grad():
                    logits.append(member(x))
                    base_logits.append(member(baselines))
            if self.module.combine == "mean":  # regression: the ensemble's output is the members' mean
                weights = torch.full((len(x), len(self.members)), 1.0 / len(self.members), dtype=x.dtype,
                                     device=x.device)
            else:
                weights = ensemble_weights(torch.stack(logits, -1), torch.stack(base_logits, -1)).to(x.dtype)
            return torch.einsum("gbmk,gk->gbm", torch.stack(parts, -1), weights)
        if self.method == "integrated-gradients":
            return self._integrated_gradients(x, baselines)
        if self.method == "deeplift":
            return self.attr.DeepLift(self.module).attribute(x, baselines=baselines)
        if self.method == "gradient-shap":
            torch.manual_seed(GRADIENT_SHAP_SEED)
            return self.attr.GradientShap(self.module).attribute(
                x, baselines=baseline.unsqueeze(0), n_samples=self.steps, stdevs=0.0)
        if self.method == "saliency":
            return self.attr.Saliency(self.module).attribute(x, abs=False)
        if self.method == "occlusion":
            with torch.no_grad():
                return self.attr.Occlusion(self.module).attribute(
                    x, sliding_window_shapes=(1, 1), baselines=baselines, perturbations_per_eval=x.shape[1])
        raise ChoiceError("method", self.method, METHODS)

    def _integrated_gradients(self, x, baselines):
        """Integrated gradients with ``steps`` points; genes whose attributions miss completeness by
        more than COMPLETENESS_TOLERANCE (ReLU kinks on the path) are redone with twice the points,
        up to MAX_STEP_DOUBLINGS times."""
        import torch

        method = self.attr.IntegratedGradients(self.module)
        attribution = torch.empty_like(x)
        todo = torch.arange(len(x), device=x.device)
        steps = self.steps
        for doubling in range(MAX_STEP_DOUBLINGS + 1):
            part, error = method.attribute(x[todo], baselines=baselines[todo], n_steps=steps,
                                           internal_batch_size=self.rows_per_pass,
                                           return_convergence_delta=True)
            attribution[todo] = part.detach()
            change = part.detach().sum((1, 2)) - error
            missed = error.abs() > COMPLETENESS_TOLERANCE * change.abs() + 1e-6
            if not missed.any():
                break
            if doubling == MAX_STEP_DOUBLINGS:
                self.incomplete += int(missed.sum())
                break
            todo, steps = todo[missed], steps * 2
        return attribution

    def _attention(self, x) -> dict[str, np.ndarray]:
        import torch

        bin_weights, mark_weights = [], []
        with torch.no_grad():
            for member in self.members:
                _, bins, marks = member.attend(x)
                bin_weights.append(bins.transpose(1, 2))  # (genes, bins, marks)
                mark_weights.append(marks)
                if self.mirror:
                    _, bins, marks = member.attend(x.flip(1))
                    bin_weights.append(bins.transpose(1, 2).flip(1))
                    mark_weights.append(marks)
        bins = torch.stack(bin_weights).mean(0).float().cpu().numpy()
        marks = torch.stack(mark_weights).mean(0).float().cpu().numpy()
        return {"attribution": bins * marks[:, None, :], "bin_attention": bins,
                "mark_attention": np.broadcast_to(marks[:, None, :], bins.shape)}


def baseline_input(kind: str, cell_inputs: np.ndarray) -> np.ndarray:
    """The baseline (bins, marks) in the model's transformed space."""
    if kind == "zeros":
        return np.zeros(cell_inputs.shape[1:], dtype=np.float32)
    if kind == "cell-mean":
        return cell_inputs.mean(0, dtype=np.float64).astype(np.float32)
    raise ChoiceError("baseline", kind, BASELINES)


@dataclass
class Summary:
    """Running sums per gene group of signed and absolute attributions (bins x marks)."""

    marks: list[str]
    positions: np.ndarray
    groups: list[str]
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    abs_sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.positions), len(self.marks))
        for group in self.groups:
            self.sums[group] = np.zeros(shape)
            self.abs_sums[group] = np.zeros(shape)
            self.counts[group] = 0

    def add(self, attribution: np.ndarray, labels: np.ndarray | None) -> None:
        for group in self.groups:
            chosen = attribution if group == "all" else attribution[labels == GROUPS[group]]
            self.sums[group] += chosen.sum(0, dtype=np.float64)
            self.abs_sums[group] += np.abs(chosen).sum(0, dtype=np.float64)
            self.counts[group] += len(chosen)

    def mean(self, group: str) -> np.ndarray:
        """Mean signed attribution (bins, marks) over the group's genes; NaN for an empty group."""
        return self.sums[group] / self.counts[group] if self.counts[group] else np.full_like(self.sums[group], np.nan)

    def mean_abs(self, group: str) -> np.ndarray:
        if not self.counts[group]:
            return np.full_like(self.abs_sums[group], np.nan)
        return self.abs_sums[group] / self.counts[group]

    def bin_rows(self) -> list[dict]:
        """One row per group, mark and bin: mean signed and mean absolute attribution."""
        rows = []
        for group in self.groups:
            mean, mean_abs = self.mean(group), self.mean_abs(group)
            for m, mark in enumerate(self.marks):
                for b, position in enumerate(self.positions):
                    rows.append({"group": group, "mark": mark, "bin": b + 1, "position": _number(position),
                                 "n_genes": self.counts[group], "mean_attribution": float(mean[b, m]),
                                 "mean_abs_attribution": float(mean_abs[b, m])})
        return rows

    def mark_rows(self) -> list[dict]:
        """Per group and mark: the mean over genes of the total signed and absolute attribution
        over all bins, ranked by the absolute total (1 = most influential)."""
        rows = []
        for group in self.groups:
            totals, abs_totals = self.mean(group).sum(0), self.mean_abs(group).sum(0)
            order = np.argsort(-np.nan_to_num(abs_totals, nan=-np.inf), kind="stable")
            ranks = np.empty(len(self.marks), dtype=int)
            ranks[order] = np.arange(1, len(self.marks) + 1)
            for m, mark in enumerate(self.marks):
                rows.append({"group": group, "mark": mark, "n_genes": self.counts[group],
                             "total_attribution": float(totals[m]), "total_abs_attribution": float(abs_totals[m]),
                             "rank": int(ranks[m])})
        return rows


def _number(value: float):
    return int(value) if float(value).is_integer() else float(value)


@dataclass
class CellExplanation:
    """The genes of one cell to explain, their model inputs, raw counts and labels."""

    cell: CellData
    inputs: np.ndarray  # transformed, in the model's mark order
    counts: np.ndarray  # raw, in the model's mark order
    labels: np.ndarray | None
    gene_ids: np.ndarray
    marks: list[str]
    positions: np.ndarray
    baseline: np.ndarray


def prepare_cell(entry: Entry, cell: CellData, baseline: str, *, split: str | None,
                 genes: list[str] | None = None, genes_source: str = "--genes") -> CellExplanation:
    """Match a stored cell (all its genes) to the model and choose the genes to explain.

    ``split`` None means every gene; ``genes`` picks genes by id, in their given order.
    """
    from histcli.evaluation import match_inputs

    marks = list(entry.input.marks)
    inputs = match_inputs(entry, cell)
    base = baseline_input(baseline, inputs)
    order = [list(cell.marks).index(mark) for mark in marks]
    mask = np.ones(cell.n_genes, dtype=bool) if split is None else cell.split_mask(split)
    candidates = np.flatnonzero(mask)
    if genes is not None:
        where = f"cell {cell.name}" + ("" if split is None else f" ({split_genes(split)})")
        chosen = candidates[select_genes(cell.select(mask), genes, where, genes_source)]
    else:
        chosen = candidates
    if not len(chosen):
        raise EmptySplitError(cell.name, split, "explain")
    counts = cell.counts_array()
    return CellExplanation(
        cell=cell,
        inputs=inputs[chosen],
        counts=counts[chosen][:, :, order],
        labels=None if cell.labels is None else cell.labels[chosen],
        gene_ids=np.asarray(cell.gene_ids)[chosen],
        marks=marks,
        positions=bin_positions(cell.n_bins, cell.bin_size, cell.tss_offset),
        baseline=base,
    )


class LongWriter:
    """Streams ``gene_id bin position mark value attribution`` rows (TSV) or a JSON array."""

    def __init__(self, stream: TextIO, fmt: str, marks: list[str], positions: np.ndarray, attention: bool = False):
        self.stream = stream
        self.fmt = fmt
        self.marks = marks
        self.positions = [position_text(p) for p in positions]
        self.position_values = [_number(p) for p in positions]
        self.extra = ["bin_attention", "mark_attention"] if attention else []
        self.count = 0
        self.started = False

    def _write(self, text: str) -> None:
        from histcli.output import write

        write(text, self.stream)

    def _start(self) -> None:
        if not self.started:
            self.started = True
            columns = ["gene_id", "bin", "position", "mark", "value", "attribution", *self.extra]
            self._write("\t".join(columns) + "\n" if self.fmt == "tsv" else "[")

    def add(self, gene_ids: Iterable, counts: np.ndarray, result: dict[str, np.ndarray]) -> None:
        import json

        self._start()
        attribution = result["attribution"]
        extras = [result[name] for name in self.extra]
        values = counts.tolist()
        lines = []
        for g, gene in enumerate(gene_ids):
            gene_values, gene_attr = values[g], attribution[g].tolist()
            gene_extras = [extra[g].tolist() for extra in extras]
            for b in range(len(self.positions)):
                for m, mark in enumerate(self.marks):
                    if self.fmt == "tsv":
                        fields = [str(gene), str(b + 1), self.positions[b], mark, str(gene_values[b][m]),
                                  f"{gene_attr[b][m]:.9g}", *(f"{extra[b][m]:.9g}" for extra in gene_extras)]
                        lines.append("\t".join(fields))
                    else:
                        item = {"gene_id": str(gene), "bin": b + 1, "position": self.position_values[b],
                                "mark": mark, "value": gene_values[b][m], "attribution": gene_attr[b][m]}
                        item.update({name: extra[b][m] for name, extra in zip(self.extra, gene_extras, strict=True)})
                        lines.append(json.dumps(item))
        if self.fmt == "tsv":
            self._write("\n".join(lines) + "\n" if lines else "")
        elif lines:
            self._write(("," if self.count else "") + "\n  " + ",\n  ".join(lines))
        self.count += len(lines)

    def close(self) -> None:
        self._start()
        if self.fmt == "json":
            self._write("\n]\n" if self.count else "]\n")


def explain_genes(explainer: Explainer, genes: CellExplanation, *, writer: LongWriter | None = None,
                  summary: Summary | None = None, on_batch=None) -> None:
    """Attribute every chosen gene, batch by batch, streaming rows and/or summing them."""
    from histcli import interrupt

    for start, end in explainer.batches(genes.inputs):
        interrupt.check()
        result = explainer.attribute(genes.inputs[start:end])
        if writer is not None:
            writer.add(genes.gene_ids[start:end], genes.counts[start:end], result)
        if summary is not None:
            summary.add(result["attribution"], None if genes.labels is None else genes.labels[start:end])
        if on_batch is not None:
            on_batch(end)


def summary_groups(labels: np.ndarray | None) -> list[str]:
    return ["all"] if labels is None else ["all", *GROUPS]


def plot_summary(pyplot, summary: Summary, path: Path, title: str) -> None:
    """Mark x position heatmaps of the mean signed attribution, one panel per label group
    (high and low when labels are known), diverging colours centred on 0, TSS marked."""
    from matplotlib.colors import TwoSlopeNorm

    from histcli.fsutil import atomic_path

    groups = [group for group in summary.groups if group != "all" and summary.counts[group]] or ["all"]
    means = {group: summary.mean(group) for group in groups}
    limit = max(float(np.nanmax(np.abs(mean))) for mean in means.values()) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    positions_kb = summary.positions / 1000.0
    step = positions_kb[1] - positions_kb[0] if len(positions_kb) > 1 else 1.0
    extent = (positions_kb[0] - step / 2, positions_kb[-1] + step / 2, len(summary.marks) - 0.5, -0.5)
    figure, axes = pyplot.subplots(len(groups), 1, figsize=(7.5, 1.1 + 1.6 * len(groups)), squeeze=False,
                                   sharex=True)
    image = None
    for axis, group in zip(axes[:, 0], groups, strict=True):
        image = axis.imshow(means[group].T, aspect="auto", cmap="RdBu_r", norm=norm, extent=extent,
                            interpolation="nearest")
        axis.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_yticks(range(len(summary.marks)), summary.marks, fontsize=8)
        label = {"all": "all genes", "high": "genes labelled high", "low": "genes labelled low"}[group]
        axis.set_title(f"{label} (n = {summary.counts[group]:,})", fontsize=9)
    axes[-1, 0].set_xlabel("position relative to the TSS (kb)")
    figure.suptitle(title, fontsize=10)
    figure.colorbar(image, ax=axes[:, 0].tolist(), label="mean attribution (logit)", shrink=0.9)
    with atomic_path(path) as temp:
        figure.savefig(temp, format=path.suffix.lstrip(".").lower(), dpi=110)
    pyplot.close(figure)
