"""reckon's daily reconciliation as Airflow DAGs.

`reckon_daily`: one task per channel and stage (fetch → normalize → collect → reconcile →
report), the logical date (`ds`) as the bill date. reckon's exit codes decide what Airflow
does (CONTRACT.md):

    0      done (differences are results)            → success
    75     not ready yet (no bill, a service down)   → retry later (retries, retry_delay)
    1      anything else                             → retry
    2, 3   configuration error, bad input            → fail at once, no retry

Days must run in order (day D's carry-over and ledger feed day D+1): `max_active_runs=1`
and `depends_on_past=True` keep Airflow's own backfills (`airflow backfill create`) in order.

`reckon_backfill`: one task that runs `reckon backfill` over a range (params `from`, `to`,
`channels`), for catching up many days at once with the channels of a day side by side.

Settings come from the environment of the Airflow workers (in a real deployment, set them in
the worker's environment or replace them with Airflow Variables):

    RECKON_BIN          the reckon binary (default: `reckon` on PATH)
    RECKON_CONFIG       the reckon.toml (default: /etc/reckon/reckon.toml)
    RECKON_CHANNELS     comma-separated channels (default: alipay,wechat)
    RECKON_RETRIES      retries of a task (default: 6)
    RECKON_RETRY_DELAY  seconds between retries (default: 1200)
"""

import os
import subprocess
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

RECKON = os.environ.get("RECKON_BIN", "reckon")
CONFIG = os.environ.get("RECKON_CONFIG", "/etc/reckon/reckon.toml")
CHANNELS = [c.strip() for c in os.environ.get("RECKON_CHANNELS", "alipay,wechat").split(",") if c.strip()]
STAGES = ["fetch", "normalize", "collect", "reconcile", "report"]
RETRIES = int(os.environ.get("RECKON_RETRIES", "6"))
RETRY_DELAY = timedelta(seconds=int(os.environ.get("RECKON_RETRY_DELAY", "1200")))

NO_RETRY = {2: "configuration error", 3: "bad input"}


def run_reckon(args):
    """Runs reckon; returns its last stdout line (the JSON summary) or raises by exit code."""
    proc = subprocess.run([RECKON, *args], capture_output=True, text=True)
    if proc.stderr:
        print(proc.stderr[-20000:])
    lines = proc.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    print(last)
    code = proc.returncode
    if code == 0:
        return last
    if code in NO_RETRY:
        raise AirflowFailException(f"reckon exited {code} ({NO_RETRY[code]}), not retried: {last}")
    raise AirflowException(f"reckon exited {code} (retry later): {last}")


default_args = {
    "retries": RETRIES,
    "retry_delay": RETRY_DELAY,
    "depends_on_past": True,
}

with DAG(
    dag_id="reckon_daily",
    description="reckon: reconcile each channel's bill of the day against the warehouse",
    schedule="0 10 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["reckon"],
):
    for channel in CHANNELS:
        previous = None
        for stage in STAGES:

            @task(task_id=f"{channel}.{stage}")
            def run_stage(stage=stage, channel=channel):
                ds = get_current_context()["ds"]
                return run_reckon(["stage", stage, "--config", CONFIG, "--date", ds, "--channel", channel])

            current = run_stage()
            if previous is not None:
                previous >> current
            previous = current

with DAG(
    dag_id="reckon_backfill",
    description="reckon: reconcile a range of days in order (trigger with from/to)",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "from": Param("2026-11-01", type="string", format="date"),
        "to": Param("2026-11-01", type="string", format="date"),
        "channels": Param(",".join(CHANNELS), type="string"),
    },
    default_args={"retries": RETRIES, "retry_delay": RETRY_DELAY},
    tags=["reckon"],
):

    @task(task_id="backfill")
    def backfill():
        p = get_current_context()["params"]
        args = ["backfill", "--config", CONFIG, "--from", p["from"], "--to", p["to"]]
        for c in [c.strip() for c in p["channels"].split(",") if c.strip()]:
            args += ["--channel", c]
        return run_reckon(args)

    backfill()
