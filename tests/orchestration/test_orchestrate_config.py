"""The orchestrate section: defaults match params.yaml, and every bad value is a ConfigError naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import load_params, section
from pipeline.errors import ConfigError
from pipeline.orchestration.config import OrchestrateConfig
from tests.conftest import REPO


def load(**values: Any) -> OrchestrateConfig:
    return section({"orchestrate": values}, "orchestrate", OrchestrateConfig)


def test_params_yaml_section_loads() -> None:
    cfg = section(load_params(REPO / "params.yaml"), "orchestrate", OrchestrateConfig)
    assert cfg.retries >= 0 and cfg.retry_delay_s >= 0 and cfg.deployment


def test_defaults_and_valid_values() -> None:
    assert load() == OrchestrateConfig(retries=1, retry_delay_s=10.0, deployment="weekly-retrain",
                                       cron="0 3 * * 1", timezone="UTC")  # fmt: skip
    cfg = load(retries=0, retry_delay_s=0, cron="*/15 6-18 * * mon-fri", timezone="America/New_York")
    assert (cfg.retries, cfg.retry_delay_s, cfg.cron) == (0, 0.0, "*/15 6-18 * * mon-fri")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"retries": -1}, "orchestrate: retries must be >= 0, got -1"),
        ({"retries": 1.5}, "orchestrate.retries: expected an integer, got 1.5"),
        ({"retry_delay_s": -5}, "orchestrate: retry_delay_s must be >= 0 seconds, got -5.0"),
        ({"deployment": " "}, "orchestrate: deployment must be a non-empty name"),
        ({"cron": "61 * * * *"}, "orchestrate: cron must be a valid cron expression"),
        ({"cron": "0 3 * *"}, "orchestrate: cron must be a valid cron expression"),
        ({"cron": "H 3 * * *"}, "orchestrate: cron must be a valid cron expression"),  # Jenkins-style: not in Prefect
        ({"timezone": "Europe/Pariss"}, "orchestrate: timezone must be an IANA time zone, got 'Europe/Pariss' (did you mean 'Europe/Paris'?)"),
        ({"timezone": "Nowhere"}, "orchestrate: timezone must be an IANA time zone, got 'Nowhere'"),
        ({"retires": 2}, "orchestrate.retires: unknown key (did you mean 'retries'?)"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(**values)
    assert str(exc.value).startswith(message), str(exc.value)


def test_bad_cron_message_shows_the_value_and_the_format() -> None:
    with pytest.raises(ConfigError) as exc:
        load(cron="every monday")
    assert "'every monday'" in str(exc.value) and "minute hour day-of-month month day-of-week" in str(
        exc.value
    )
