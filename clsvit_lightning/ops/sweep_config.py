"""W&B sweep files without a W&B server: validate, expand grid/random parameters, render commands.

Only the pure-Python ``sweeps`` engine (github.com/wandb/sweeps) runs without a server, and its random
suggestions cannot be seeded; expanding ``grid`` and ``random`` here is short and reproducible
(docs/operations.md#sweeps).
Commands are rendered the way the W&B agent renders them (``${args}`` -> ``--key=<str(value)>``),
so a combination that runs here runs the same under ``wandb agent``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

METHODS = ("grid", "random")
GRID_FORMS = ("value", "values", "int_uniform")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


class SweepConfigError(ValueError):
    """A sweep file this runner cannot use; the message names the file and the key."""


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and check a sweep YAML (``method``, flat dotted ``parameters``, optional ``command``)."""
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f"sweep file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepConfigError(
            f"{path}: not valid YAML ({error}). Hint: write `command:` as a block list; in a flow list "
            "`[${env}, ...]` the `{` of the macros is YAML syntax"
        ) from error
    if not isinstance(config, Mapping):
        raise SweepConfigError(f"{path}: expected a mapping with `method` and `parameters`")
    method = config.get("method")
    if method not in METHODS:
        raise SweepConfigError(
            f"{path}: method {method!r} is not supported by the local runner; use one of {METHODS} "
            "(bayes needs a W&B server or the `sweeps` package)"
        )
    parameters = config.get("parameters")
    if not isinstance(parameters, Mapping) or not parameters:
        raise SweepConfigError(f"{path}: `parameters` must be a non-empty mapping of dotted CLI keys")
    for name, spec in parameters.items():
        _check_parameter(path, name, spec, method)
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(item, str) for item in command):
        raise SweepConfigError(f"{path}: `command` must be a list of strings")
    return dict(config)


def _check_parameter(path: Path, name: str, spec: Any, method: str) -> None:
    where = f"{path}: parameter {name!r}"
    if not isinstance(spec, Mapping):
        raise SweepConfigError(f"{where} must be a mapping such as {{values: [...]}}")
    if "parameters" in spec:
        # The agent passes a nested block as one dict, which ${args} prints as a Python literal.
        raise SweepConfigError(f"{where}: nested `parameters` are not supported; use flat dotted names")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise SweepConfigError(f"{where}: `values` must be a non-empty list")
        if any(v is None for v in values):
            raise SweepConfigError(f"{where}: None renders as `None`, which the CLI rejects; write the string 'null'")
        return
    if "value" in spec:
        if spec["value"] is None:
            raise SweepConfigError(f"{where}: None renders as `None`, which the CLI rejects; write the string 'null'")
        return
    distribution = spec.get("distribution")
    if distribution not in _SAMPLERS:
        raise SweepConfigError(
            f"{where}: needs `value`, `values` or a `distribution` among {sorted(_SAMPLERS)}, got {dict(spec)}"
        )
    if method == "grid" and distribution != "int_uniform":
        raise SweepConfigError(
            f"{where}: grid search needs discrete values; distribution {distribution!r} is continuous"
        )
    missing = [k for k in _SAMPLER_KEYS[distribution] if k not in spec]
    if missing:
        raise SweepConfigError(f"{where}: distribution {distribution!r} needs {missing}")


# ------------------------------------------------------------------ expansion
def _q(value: float, spec: Mapping) -> float:
    q = spec.get("q", 1)
    return round(value / q) * q


_SAMPLERS = {
    "int_uniform": lambda rng, s: rng.randint(int(s["min"]), int(s["max"])),
    "uniform": lambda rng, s: rng.uniform(s["min"], s["max"]),
    "q_uniform": lambda rng, s: _q(rng.uniform(s["min"], s["max"]), s),
    "log_uniform": lambda rng, s: math.exp(rng.uniform(s["min"], s["max"])),  # bounds are exponents
    "log_uniform_values": lambda rng, s: math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"]))),
    "q_log_uniform_values": lambda rng, s: _q(math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"]))), s),
    "normal": lambda rng, s: rng.gauss(s.get("mu", 0.0), s.get("sigma", 1.0)),
}
_SAMPLER_KEYS = {
    "int_uniform": ("min", "max"),
    "uniform": ("min", "max"),
    "q_uniform": ("min", "max"),
    "log_uniform": ("min", "max"),
    "log_uniform_values": ("min", "max"),
    "q_log_uniform_values": ("min", "max"),
    "normal": (),
}


def _grid_values(spec: Mapping) -> list[Any]:
    if "values" in spec:
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    return list(range(int(spec["min"]), int(spec["max"]) + 1))  # int_uniform


def _sample(rng: random.Random, spec: Mapping) -> Any:
    if "values" in spec:
        weights = spec.get("probabilities")
        return rng.choices(spec["values"], weights=weights)[0]
    if "value" in spec:
        return spec["value"]
    return _SAMPLERS[spec["distribution"]](rng, spec)


def expand(config: Mapping[str, Any], seed: int = 0, count: int | None = None) -> list[dict[str, Any]]:
    """The parameter combinations of a sweep, in a fixed order (grid: last parameter varies fastest).

    ``random`` draws ``count`` (else ``run_cap``) combinations from ``random.Random(seed)``.
    ``grid`` lists the full product; ``count`` or ``run_cap`` keep its first combinations.
    """
    parameters = config["parameters"]
    limit = count if count is not None else config.get("run_cap")
    if config["method"] == "grid":
        names = list(parameters)
        grid = itertools.product(*(_grid_values(parameters[name]) for name in names))
        combos = [dict(zip(names, values, strict=True)) for values in grid]
        return combos[:limit] if limit else combos
    if not limit:
        raise SweepConfigError("random search needs a number of runs: pass --count or set run_cap in the sweep file")
    rng = random.Random(seed)
    return [{name: _sample(rng, spec) for name, spec in parameters.items()} for _ in range(int(limit))]


# ------------------------------------------------------------------ rendering
def render_args(params: Mapping[str, Any], style: str = "args") -> list[str]:
    """``${args}`` and its variants, as the agent writes them (values through Python ``str``)."""
    if style == "args":
        return [f"--{k}={v}" for k, v in params.items()]
    if style == "args_no_hyphens":
        return [f"{k}={v}" for k, v in params.items()]
    if style == "args_no_equals":
        return [item for k, v in params.items() for item in (f"--{k}", str(v))]
    if style == "args_no_boolean_flags":
        return [f"--{k}" if v is True else f"--{k}={v}" for k, v in params.items() if v is not False]
    if style == "args_json":
        return [json.dumps(dict(params))]
    if style == "args_append_hydra":
        return [f"+{k}={v}" for k, v in params.items()]
    if style == "args_override_hydra":
        return [f"++{k}={v}" for k, v in params.items()]
    raise SweepConfigError(f"unknown command macro ${{{style}}}")


_MACRO = re.compile(r"^\$\{([a-z_]+)(?::([A-Za-z0-9_]+))?\}$")
_ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # the agent's: replaced inside any item


def render_command(
    command: list[str],
    params: Mapping[str, Any],
    program: str | None = None,
    interpreter: list[str] | None = None,
    executables: Mapping[str, list[str]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Replace the agent's macros in ``command``; ``${env}`` is dropped (the agent writes ``/usr/bin/env``).

    ``executables`` maps a bare command word (``clsvit``) to the argv that runs it here, so the
    runner uses the current interpreter whatever is on PATH.
    """
    interpreter = interpreter or ["python"]
    executables = executables or {}
    environ = environ or {}
    argv: list[str] = []
    for item in command:
        # As the agent: ${envvar:NAME} anywhere in an item, an unset variable left as its name.
        item = _ENVVAR.sub(lambda m: environ.get(m.group(1), m.group(1)), item)
        match = _MACRO.match(item)
        if not match:
            argv.extend(executables.get(item, [item]) if not argv else [item])
            continue
        name, _argument = match.groups()
        if name == "env":
            continue
        if name == "interpreter":
            argv.extend(interpreter)
        elif name == "program":
            if not program:
                raise SweepConfigError("the command uses ${program} but the sweep file has no `program`")
            argv.append(program)
        else:
            argv.extend(render_args(params, name))
    return argv


def replace_configs(argv: list[str], configs: list[str]) -> list[str]:
    """Swap every ``--config X`` / ``--config=X`` of a command for ``configs`` (at the first one's place)."""
    out: list[str] = []
    inserted, skip = False, False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in ("--config", "-c") or item.startswith("--config="):
            skip = item in ("--config", "-c")
            if not inserted:
                out.extend(a for c in configs for a in ("--config", c))
                inserted = True
            continue
        out.append(item)
    if not inserted:
        raise SweepConfigError("--base_config given but the sweep command has no --config to replace")
    return out


def combination_name(index: int, params: Mapping[str, Any]) -> str:
    """A folder-safe run name: ``003-qkv-first_third-num_registers-4``-like, bounded in length."""
    parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in params.items()]
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts)).strip("_")
    return f"{index:03d}-{slug[:80]}"
