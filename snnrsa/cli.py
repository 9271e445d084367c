"""Command line: ``snnrsa [group=option ...]`` and ``snnrsa -m ...`` (Hydra multirun)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from snnrsa.config import RENAMED_KEYS, ConfigError, resolve

log = logging.getLogger("snnrsa")


def run_job(cfg: DictConfig) -> float:
    """One job: validate, train and track, print the tables; returns the last mean rho."""
    from snnrsa.data.rdm_file import RDMFileError
    from snnrsa.run import run, summary_tables

    try:
        typed = resolve(cfg)
    except ConfigError as err:
        raise SystemExit(f"snnrsa: invalid configuration: {err}") from None
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(typed))
    job_num = hydra_cfg.job.get("num") or 0
    try:
        rsa = run(typed, out_dir, config_yaml, job_num=int(job_num))
    except RDMFileError as err:  # a user's RDM file: the message, not a traceback
        raise SystemExit(f"snnrsa: unusable brain RDMs: {err}") from None
    train = pd.read_csv(out_dir / "train.csv")
    ceil_csv = out_dir / "noise_ceiling.csv"
    text = summary_tables(rsa, train, pd.read_csv(ceil_csv) if ceil_csv.exists() else None)
    if (out_dir / "probe.csv").exists():
        probe = pd.read_csv(out_dir / "probe.csv")
        text += "\n\nLinear-probe held-out accuracy (frozen layers):\n" + probe.pivot(
            index="epoch", columns="layer", values="probe_test_acc").to_string(
            float_format=lambda v: f"{v:.4f}")
    print(f"\nRun directory: {out_dir}\n\n{text}\n", flush=True)
    return float(rsa[rsa.epoch == rsa.epoch.max()]["rho"].mean())


def check_renamed_keys(overrides: list[str]) -> None:
    """An old key on the command line fails naming its successor (Hydra itself would only say
    that it cannot override a key the config lacks)."""
    for arg in overrides:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in RENAMED_KEYS:
            raise SystemExit(f"snnrsa: invalid configuration: {key} was renamed: use "
                             f"{RENAMED_KEYS[key]}")


_CONF = str(Path(__file__).resolve().parent.parent / "conf")
_hydra_main = hydra.main(config_path=_CONF, config_name="config", version_base="1.3")(run_job)


def main() -> None:
    """The ``snnrsa`` command: Hydra's entry point after the renamed-key check."""
    check_renamed_keys(sys.argv[1:])
    _hydra_main()
