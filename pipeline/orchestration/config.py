"""The ``orchestrate`` params section: retries of a stage task and the retraining schedule."""

from __future__ import annotations

import difflib
import zoneinfo
from dataclasses import dataclass

CRON_HELP = "five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * 1' for Mondays 03:00"


@dataclass(frozen=True)
class OrchestrateConfig:
    """``orchestrate`` section of params.yaml.

    retries: how often a failed stage task (one ``dvc repro <stage>``) is tried again.
    retry_delay_s: seconds to wait before a retry.
    deployment: name of the scheduled retraining deployment that ``deunet flow serve`` creates.
    cron: when that deployment runs (standard five-field cron, evaluated in ``timezone``).
    timezone: IANA time zone of the schedule, e.g. ``UTC`` or ``Europe/Paris``.
    """

    retries: int = 1
    retry_delay_s: float = 10.0
    deployment: str = "weekly-retrain"
    cron: str = "0 3 * * 1"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.retry_delay_s < 0:
            raise ValueError(f"retry_delay_s must be >= 0 seconds, got {self.retry_delay_s}")
        if not self.deployment.strip() or "/" in self.deployment:
            raise ValueError(f"deployment must be a non-empty name without '/', got {self.deployment!r}")
        check_cron(self.cron)
        check_timezone(self.timezone)


def check_cron(cron: str) -> None:
    """Raise ValueError naming ``cron`` unless Prefect's schedule model accepts it."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:  # pydantic's ValidationError; its text is a multi-line dump
        raise ValueError(f"cron must be a valid cron expression ({CRON_HELP}), got {cron!r}") from None


def check_timezone(timezone: str) -> None:
    """Raise ValueError (with a "did you mean") unless ``timezone`` is an IANA zone Prefect accepts."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron="0 0 * * *", timezone=timezone)
    except ValueError:
        close = difflib.get_close_matches(timezone, sorted(zoneinfo.available_timezones()), n=1)
        hint = (
            f" (did you mean {close[0]!r}?)" if close else " (an IANA name such as 'UTC' or 'Europe/Paris')"
        )
        raise ValueError(f"timezone must be an IANA time zone, got {timezone!r}{hint}") from None
