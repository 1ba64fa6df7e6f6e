"""Which sub-layers give [CLS]/register tokens their own parameters ("layer specialization").

A :class:`Specialization` names, for each specializable component of a block, the set of blocks
where prefix tokens ([CLS] and, by default, registers) and patch tokens get separate parameters,
plus whether the final norm is split. It has three equivalent spellings:

* a preset name: ``"vanilla"`` (nothing split), ``"paper"`` (the recipe of Marouani et al.,
  ICLR 2026: norm1, norm2, ls1, ls2 in every block, the final norm, qkv in the first third) or
  ``"norms"`` (``paper`` without the qkv split);
* a spec string for the command line and sweeps: ``;``-separated clauses
  ``component[,component]:selector``, the bare word ``final_norm`` (or ``final_norm:true``/``false``), optionally
  ``registers_path:patch``, and preset names as starting points. Examples:
  ``"norm1,norm2:all;qkv:0-3;final_norm"``, ``"paper;registers_path:patch"``;
* the structured form (this dataclass, or a dict of its fields in YAML).

Block selectors: ``none``, ``all``, ``first_quarter``, ``first_third``, ``first_half``,
``last_half``, an index ``5``, an inclusive range ``0-3``, or a list mixing both
(``"0-3,8"`` or ``[0, 1, 2, 8]``). Fractions round down: ``first_third`` of 12 blocks is 0-3.

This module only decides *where*. The layers that hold a prefix path beside the patch path (the
[CLS] LayerNorm, linear maps, LayerScale) are in ``specialized_layers.py``; ``Block`` builds each
component specialized or not as :meth:`Specialization.for_block` says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from clsvit_lightning.errors import ConfigError

Selector = str | int | list[int]

_FRACTIONS = {
    "none": lambda depth: range(0),
    "all": lambda depth: range(depth),
    "first_quarter": lambda depth: range(depth // 4),
    "first_third": lambda depth: range(depth // 3),
    "first_half": lambda depth: range(depth // 2),
    "last_half": lambda depth: range(depth // 2, depth),
}


class SpecializationError(ConfigError):
    """A specialization that cannot be read; the message names the clause or component."""


_FINAL_NORM_VALUES = {"true": True, "false": False}


@dataclass(frozen=True)
class Specialization:
    """Per-component block selectors, the final-norm switch and the route of register tokens.

    The selector fields are the specializable components of a block, in forward order; they are
    :data:`COMPONENTS`.
    """

    norm1: Selector = "none"
    qkv: Selector = "none"
    proj: Selector = "none"
    ls1: Selector = "none"
    norm2: Selector = "none"
    mlp: Selector = "none"
    ls2: Selector = "none"
    final_norm: bool = False
    registers_path: Literal["cls", "patch"] = "cls"

    def __post_init__(self) -> None:
        if self.registers_path not in ("cls", "patch"):
            raise SpecializationError(
                f"specialization.registers_path must be 'cls' or 'patch', got {self.registers_path!r}"
            )
        for component in COMPONENTS:
            # Check the syntax now; block indices are checked against the depth in `blocks`.
            _parse_selector(getattr(self, component), depth=None, component=component)

    @classmethod
    def parse(cls, value: str | Mapping | Specialization | None) -> Specialization:
        """Build from a preset name, a spec string, a mapping of fields, or an instance."""
        if value is None:
            return cls()
        if isinstance(value, Specialization):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise SpecializationError(
                    f"unknown specialization field(s) {sorted(unknown)}; "
                    f"valid fields are {[f.name for f in dataclasses.fields(cls)]}"
                )
            return cls(**value)
        if not isinstance(value, str):
            raise SpecializationError(
                f"specialization must be a preset name, a spec string or a mapping, got {value!r}"
            )
        text = value.strip()
        if text in PRESETS:
            return PRESETS[text]
        return cls._from_string(text)

    @classmethod
    def _from_string(cls, text: str) -> Specialization:
        fields: dict[str, object] = {}
        named: set[str] = set()  # given by a clause of their own; presets only set starting values

        def name_once(name: str) -> None:
            if name in named:
                raise SpecializationError(
                    f"specialization {text!r} names {name!r} twice; give each component one clause "
                    f"(a list such as '{name}:0-3,8' selects several blocks)"
                )
            named.add(name)

        for clause in filter(None, (c.strip() for c in text.split(";"))):
            if clause == "final_norm":
                name_once("final_norm")
                fields["final_norm"] = True
                continue
            if clause in PRESETS:  # a preset as a starting point: "paper;mlp:all"
                fields.update(dataclasses.asdict(PRESETS[clause]))
                continue
            if ":" not in clause:
                raise SpecializationError(
                    f"specialization clause {clause!r} must read 'component[,component]:selector' "
                    f"or be 'final_norm' (presets: {sorted(PRESETS)})"
                )
            names, selector = (part.strip() for part in clause.split(":", 1))
            if names == "registers_path":
                name_once("registers_path")
                fields["registers_path"] = selector
                continue
            if names == "final_norm":
                name_once("final_norm")
                if selector.lower() not in _FINAL_NORM_VALUES:
                    raise SpecializationError(
                        f"specialization 'final_norm' takes true or false ('final_norm' alone means true), "
                        f"got {selector!r} in {text!r}"
                    )
                fields["final_norm"] = _FINAL_NORM_VALUES[selector.lower()]
                continue
            for name in (n.strip() for n in names.split(",")):
                if name not in COMPONENTS:
                    raise SpecializationError(
                        f"unknown specialization component {name!r} in {text!r}; valid components are "
                        f"{list(COMPONENTS)} (with a block selector), 'final_norm' (alone, or :true/:false) "
                        "and 'registers_path' (:cls or :patch)"
                    )
                name_once(name)
                fields[name] = selector
        return cls(**fields)

    def blocks(self, depth: int) -> dict[str, frozenset[int]]:
        """Resolve every selector against a model depth: component -> block indices."""
        return {c: _parse_selector(getattr(self, c), depth, c) for c in COMPONENTS}

    def for_block(self, index: int, depth: int) -> frozenset[str]:
        """The components specialized in block ``index``."""
        return frozenset(c for c, chosen in self.blocks(depth).items() if index in chosen)

    def is_vanilla(self) -> bool:
        """True when nothing is split, whatever the depth."""
        return not self.final_norm and all(_selects_nothing(getattr(self, c)) for c in COMPONENTS)

    def to_string(self, depth: int | None = None) -> str:
        """The spec string; with ``depth``, selectors are written as explicit block ranges.

        Components with the same selector share a clause: ``norm1,norm2:all;qkv:0-3``.
        """
        groups: dict[str, list[str]] = {}
        for component in COMPONENTS:
            selector = getattr(self, component)
            if depth is not None:
                text = _compact(sorted(_parse_selector(selector, depth, component)))
            elif _selects_nothing(selector):
                text = ""
            else:
                text = ",".join(map(str, selector)) if isinstance(selector, (list, tuple)) else str(selector)
            if text:
                groups.setdefault(text, []).append(component)
        clauses = [f"{','.join(names)}:{text}" for text, names in groups.items()]
        if self.final_norm:
            clauses.append("final_norm")
        if self.registers_path != "cls":
            clauses.append(f"registers_path:{self.registers_path}")
        return ";".join(clauses) or "vanilla"


# The specializable components of a block, in forward order: the selector fields of `Specialization`.
COMPONENTS = tuple(f.name for f in dataclasses.fields(Specialization) if f.name not in ("final_norm", "registers_path"))


def _parse_selector(selector: Selector, depth: int | None, component: str) -> frozenset[int]:
    """Block indices chosen by ``selector``; ``depth=None`` only checks the syntax."""
    if isinstance(selector, bool):
        raise SpecializationError(f"specialization of {component!r}: expected a block selector, got {selector!r}")
    if isinstance(selector, int):
        items: list[object] = [selector]
    elif isinstance(selector, (list, tuple)):
        items = list(selector)
    elif isinstance(selector, str):
        key = selector.strip()
        if key in _FRACTIONS:
            return frozenset(_FRACTIONS[key](depth if depth is not None else 0))
        items = [part.strip() for part in key.split(",") if part.strip()]
    else:
        raise SpecializationError(f"specialization of {component!r}: cannot read selector {selector!r}")

    chosen: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            first = last = item
        elif isinstance(item, str) and item.lstrip("-").isdigit():
            first = last = int(item)
        elif isinstance(item, str) and "-" in item.strip("-"):
            low, high = item.split("-", 1)
            if not (low.strip().isdigit() and high.strip().isdigit()):
                raise SpecializationError(_selector_help(component, selector))
            first, last = int(low), int(high)
            if first > last:
                raise SpecializationError(
                    f"specialization of {component!r}: range {item!r} runs backwards (write it as '{last}-{first}')"
                )
        else:
            raise SpecializationError(_selector_help(component, selector))
        for index in (first, last):
            if index < 0 or (depth is not None and index >= depth):
                valid = f"0..{depth - 1}" if depth is not None else "0 or more"
                raise SpecializationError(
                    f"specialization of {component!r}: block index {index} is out of range; "
                    f"valid block indices are {valid}"
                )
        chosen.update(range(first, last + 1))
    return frozenset(chosen)


def _selects_nothing(selector: Selector) -> bool:
    if isinstance(selector, str):
        return selector.strip() in ("none", "")
    return isinstance(selector, (list, tuple)) and len(selector) == 0


def _selector_help(component: str, selector: object) -> str:
    return (
        f"specialization of {component!r}: cannot read selector {selector!r}; expected one of "
        f"{sorted(_FRACTIONS)}, an index '5', a range '0-3', or a list such as '0-3,8' or [0, 1]"
    )


def _compact(indices: list[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8'."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


PRESETS: dict[str, Specialization] = {
    "vanilla": Specialization(),
    "none": Specialization(),
    # Norms and LayerScales everywhere, the final norm, QKV in the first third (Marouani et al., ICLR 2026,
    # arXiv 2602.08626):
    # +8.3 % parameters for ViT-S/B/L, no extra FLOPs.
    "paper": Specialization(norm1="all", norm2="all", ls1="all", ls2="all", qkv="first_third", final_norm=True),
    # `paper` without its qkv split: the norms and LayerScales in every block and the final norm, the
    # cheapest split (+0.1 % parameters for ViT-S) and the third arm of the continued-pretraining study.
    "norms": Specialization(norm1="all", norm2="all", ls1="all", ls2="all", final_norm=True),
}
