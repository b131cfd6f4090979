"""Shared plumbing of the Hydra entry points: config location, device choice, one-line errors."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
if not Path(CONF_DIR).is_dir():  # running from a source checkout without an install
    CONF_DIR = str(Path(__file__).resolve().parents[2] / "experiments" / "conf")


def resolve_device(name: str) -> torch.device:
    from shortcutlens import distributed as dist

    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"Unknown device '{name}'. Valid devices: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but no CUDA device is available (use device=auto or cpu)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    torch.cuda.set_device(dist.local_rank())
    return torch.device("cuda", dist.local_rank())


def clear_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can cause (bad values, names, missing data, bad checkpoints, a full disk)
    into one line on stderr and exit status 2, instead of a traceback."""
    from shortcutlens.checkpoint import CheckpointError, NonFiniteLossError
    from shortcutlens.data import DataNotFoundError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DataNotFoundError, CheckpointError, NonFiniteLossError, ValueError, TypeError) as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:  # a full disk, a folder that became read-only mid-run
            if err.filename is None:
                raise
            print(f"error: cannot write {err.filename} ({err.strerror or err})", file=sys.stderr)
            sys.exit(2)

    return wrapper


def one_line(err: BaseException) -> str:
    """The first line of an error's message (every message a user sees is one line)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def hydra_errors(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make Hydra's own errors (an unknown group option or key, a malformed value or override) one line
    in our style, with exit status 2. ``HYDRA_FULL_ERROR=1`` still shows Hydra's stack.

    Goes outside ``@hydra.main``: Hydra is asked to raise (``HYDRA_FULL_ERROR=1`` for the call) instead
    of printing its multi-line report, and the exception is rewritten here.
    """

    def decorate(app: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(app)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = os.environ.get("HYDRA_FULL_ERROR")
            if before == "1":
                return app(*args, **kwargs)
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                return app(*args, **kwargs)
            except Exception as err:
                message = hydra_error_line(err, config_name=config_name, argv=sys.argv[1:])
                if message is None:
                    raise
                print(f"error: {message}", file=sys.stderr)
                sys.exit(2)
            finally:
                if before is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = before

        return wrapper

    return decorate


def hydra_error_line(err: BaseException, *, config_name: str, argv: list[str]) -> str | None:
    """One line for an error Hydra or OmegaConf raised while composing the config or preparing the run
    directory; None for anything else (a bug: its traceback should show)."""
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException, ValidationError

    from shortcutlens.config_schema import rule_for

    text = str(err)
    cause = err.__cause__
    if isinstance(err, OverrideParseException):
        bad = unparsable_override(argv)
        where = f" '{bad}'" if bad else ""
        return (f"cannot parse the override{where}: write key=value, lists as key=[a,b], strings with spaces in quotes "
                f"({one_line(cause or err)})")
    missing = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", text)
    if missing:
        group, option = missing.group(1).split("/")[-1], missing.group(2)
        options = re.findall(r"^\s+(\S+)$", text.split("Available options", 1)[-1], re.MULTILINE) if "Available options" in text \
            else sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))
        return f"{group}={option}: no such option. Valid options for {group}: {', '.join(options)}"
    unknown = re.search(r"Could not (?:override|delete from config|append to config)[^']*'([^']+)'", text)
    if unknown and not isinstance(cause, ValidationError):
        key = unknown.group(1)
        parent, _, _ = key.rpartition(".")
        if "Could not append" in text:
            return f"+{key}: {key} already exists; set it without the '+' ({key}=...)"
        keys = valid_keys(config_name, argv, key)
        listed = f" Valid keys{f' of {parent}' if parent else ''}: {', '.join(keys)}." if keys else ""
        return f"{key}: no such key.{listed} (+{key}=... adds a new one)"
    merging = re.search(r"Error merging override (\S+?)=(.*)", text)
    if merging:
        key, value = merging.group(1).lstrip("+~"), merging.group(2).strip()
        rule = rule_for(key)
        if rule is not None:
            return f"{key}={value}: must be {rule.allowed}"
        return f"{key}={value}: {one_line(cause or err)}"
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        detail = f" ({one_line(cause)})" if cause is not None and one_line(cause) not in text else ""
        return one_line(err) + detail
    if isinstance(err, OSError) and err.filename is not None:  # Hydra creating run_dir/.hydra
        path = Path(err.filename)
        if isinstance(err, (FileExistsError, NotADirectoryError)) or (path.exists() and not path.is_dir()):
            return f"run_dir: {err.filename} is a file, not a folder; name a folder for the run's outputs"
        return f"run_dir: cannot write {err.filename} ({err.strerror or err}); choose a folder you can write to"
    return None


def unparsable_override(argv: list[str]) -> str | None:
    """The first command-line argument Hydra's override grammar cannot parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 (this is the one)
            return arg
    return None


def valid_keys(config_name: str, argv: list[str], key: str) -> list[str]:
    """Keys beside the unknown ``key`` (its parent node's) in the config the other overrides compose to
    ([] when they do not)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    parent = key.rpartition(".")[0]
    overrides = [a for a in argv if not a.startswith("-") and "=" in a and a.split("=", 1)[0].lstrip("+~") != key]
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        node: Any = cfg
        for part in filter(None, parent.split(".")):
            node = node[part]
        return [str(k) for k in node]
    except Exception:  # noqa: BLE001 (the other overrides are broken too: no list, the line still names the key)
        return []
    finally:
        GlobalHydra.instance().clear()


def register_schemas() -> None:
    """Typed defaults for the Hydra groups whose settings are dataclasses."""
    from hydra.core.config_store import ConfigStore

    from shortcutlens.train.config import ProbeConfig, TrainerConfig

    cs = ConfigStore.instance()
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
    cs.store(group="probe", name="base_probe", node=ProbeConfig)


def compose(overrides: list[str], config_name: str = "train") -> dict[str, Any]:
    """The resolved config that ``shortcutlens-train <overrides>`` would run, as a plain dict.

    Lets scripts (the demo, the benchmarks) reuse the exact config tree of the command line.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def hydra_choices() -> dict[str, Any]:
    """The config-group choices Hydra made for this job (``{"data": "digits", ...}``); {} outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def resolve_run(cfg: Any) -> tuple[dict[str, Any], str]:
    """The resolved config as a plain dict and the run directory: ``run_dir`` for a single run,
    Hydra's per-job output folder under ``--multirun``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    run_dir = str(Path(cfg.run_dir if hc.mode == RunMode.RUN else hc.runtime.output_dir))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["run_dir"] = run_dir
    return resolved, run_dir
