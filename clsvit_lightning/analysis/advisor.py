"""Specialization advisor: which blocks and components of a vanilla model to specialize.

What the ranking rests on (the analysis of Marouani et al., ICLR 2026, arXiv 2602.08626): a shared
LayerNorm that is bent to serve two token types shows it in two ways, and a specialized norm removes
exactly that strain.

1. **Separation by the norm.** With ``gap = patch_patch - cls_patch`` (how much less [CLS] resembles
   the patches than the patches resemble each other), the norm's ``separation_gain`` is
   ``gap_after - gap_before``: the separation the norm itself introduces. The paper finds
   [CLS]–patch similarity falls to about zero after the pre-attention norm while patch–patch
   stays positive.
2. **Type-specific channels.** ``channel_specificity`` is the mean over channels of
   ``|m_cls - m_patch| / (m_cls + m_patch)`` after the norm (``m``: mean magnitude per channel):
   0 when both token types use every channel alike, 1 when every channel serves only one type.

Every candidate scores ``max(separation, 0) + channel_specificity`` (both listed in its evidence):

* a **norm** (``norm1``, ``norm2``, the final ``norm``): ``separation`` is its ``separation_gain``
  and ``channel_specificity`` is measured at its output;
* **qkv** of block ``i`` reads the output of ``norm1``: ``separation`` is the gap after ``norm1``
  and ``channel_specificity`` that of ``norm1``'s output, i.e. how differently [CLS] and patches
  arrive at the projection, so how much one shared matrix must serve two input distributions.

Selection: candidates are taken in rank order when their score is positive and reaches
``keep_fraction`` of the best score of their family, while the added parameters stay within
``max_overhead`` of the model (default 8.5 %, about the paper's overhead). Norms go first (``2 D``
parameters each), each with its LayerScale (``D``; ``ls1`` with ``norm1``, ``ls2`` with ``norm2``,
as in the paper's recipe, not on evidence of their own); then qkv blocks (``3 D^2 + 3 D`` each).
``proj`` and ``mlp`` are never proposed: no measurement here speaks for them, and the paper's
ablations dropped them.

The scores are evidence of strain in the shared parameters of a *trained vanilla* model, not a
prediction of downstream gains: validate a proposal by training it (e.g. in the W&B sweep).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from clsvit_lightning.models import Specialization


@dataclass
class Candidate:
    """One (component, block) that could be specialized; ``block`` is None for the final norm."""

    component: str
    block: int | None
    score: float
    extra_parameters: int
    evidence: dict[str, float] = field(default_factory=dict)
    selected: bool = False


@dataclass
class Advice:
    """Ranked candidates, the proposed spec string and its parameter overhead (fraction)."""

    ranking: list[Candidate]
    spec: str
    overhead: float

    def to_dict(self) -> dict:
        return {"spec": self.spec, "overhead": self.overhead, "ranking": [asdict(c) for c in self.ranking]}

    def format(self, top: int = 20) -> str:
        lines = ["rank | component | block | score | separation | channel_specificity | selected"]
        for rank, candidate in enumerate(self.ranking[:top], start=1):
            evidence = candidate.evidence
            block = "final" if candidate.block is None else candidate.block
            lines.append(
                f"{rank:4d} | {candidate.component:9s} | {block!s:5s} | {candidate.score:.3f} | "
                f"{evidence['separation']:10.3f} | "
                f"{evidence['channel_specificity']:19.3f} | {'yes' if candidate.selected else ''}"
            )
        lines.append(f"proposed specialization (+{100 * self.overhead:.2f} % parameters): {self.spec}")
        return "\n".join(lines)


def _gap(similarities: dict) -> float:
    return similarities["patch_patch"] - similarities["cls_patch"]


def _norm_candidate(component: str, block: int | None, entry: dict, dim: int) -> Candidate:
    gap_before, gap_after = _gap(entry["pre"]), _gap(entry["post"])
    evidence = {
        "gap_before": gap_before,
        "gap_after": gap_after,
        "separation": gap_after - gap_before,  # the separation gain
        "channel_specificity": entry["channels"]["mean_abs_specificity"],
    }
    score = max(evidence["separation"], 0.0) + evidence["channel_specificity"]
    return Candidate(component, block, score, 2 * dim, evidence)


def _qkv_candidate(block: int, norm1: dict, dim: int, qkv_bias: bool) -> Candidate:
    evidence = {
        "separation": _gap(norm1["post"]),  # the gap after norm1
        "channel_specificity": norm1["channels"]["mean_abs_specificity"],
    }
    score = max(evidence["separation"], 0.0) + evidence["channel_specificity"]
    return Candidate("qkv", block, score, 3 * dim * dim + (3 * dim if qkv_bias else 0), evidence)


def advise(
    report: dict, max_overhead: float = 0.085, keep_fraction: float = 0.25, pair_layerscale: bool = True
) -> Advice:
    """Rank the components of the analysed model and propose a spec string (see the module docstring).

    ``report`` is :attr:`TokenAnalysis.report` (or the saved JSON) of a vanilla checkpoint.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    if max_overhead < 0:
        raise ValueError(f"max_overhead must be >= 0, got {max_overhead}")
    model = report["model"]
    dim, depth = model["embed_dim"], model["depth"]
    norms = [_norm_candidate(name, b["index"], b[name], dim) for b in report["blocks"] for name in ("norm1", "norm2")]
    norms.append(_norm_candidate("norm", None, report["final_norm"], dim))
    qkvs = [_qkv_candidate(b["index"], b["norm1"], dim, model["qkv_bias"]) for b in report["blocks"]]
    budget = max_overhead * model["num_parameters"]
    spent = 0

    # Cheap norms first (with their LayerScale), then the costly qkv blocks, each in rank order.
    for family in (norms, qkvs):
        best = max(c.score for c in family)
        for candidate in sorted(family, key=lambda c: -c.score):
            paired = dim if pair_layerscale and candidate.component in ("norm1", "norm2") else 0
            cost = candidate.extra_parameters + paired
            if candidate.score > 0 and candidate.score >= keep_fraction * best and spent + cost <= budget:
                candidate.selected = True
                spent += cost

    chosen: dict[str, list[int]] = {"norm1": [], "norm2": [], "qkv": [], "ls1": [], "ls2": []}
    for candidate in norms + qkvs:
        if candidate.selected and candidate.block is not None:
            chosen[candidate.component].append(candidate.block)
            if pair_layerscale and candidate.component in ("norm1", "norm2"):
                chosen["ls" + candidate.component[-1]].append(candidate.block)
    final_norm = any(c.selected for c in norms if c.block is None)
    spec = Specialization(**{k: sorted(v) for k, v in chosen.items()}, final_norm=final_norm)
    ranking = sorted(norms + qkvs, key=lambda c: (-c.score, c.component, -1 if c.block is None else c.block))
    return Advice(ranking=ranking, spec=spec.to_string(depth=depth), overhead=spent / model["num_parameters"])
