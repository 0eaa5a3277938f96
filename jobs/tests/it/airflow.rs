//! The example DAGs under `airflow/dags/`, run by a real Apache Airflow from PyPI
//! (`airflow dags test`): a day reconciled task by task; bad input failing at once while a
//! missing bill is retried; a backfill over two days.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::generate;

const AIRFLOW: &str = "apache-airflow==3.3.2";

struct Airflow {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Airflow {
    fn start() -> Option<Airflow> {
        let venv = match crate::services::venv("airflow-3.3.2", &[AIRFLOW]) {
            Ok(v) => v,
            Err(why) => {
                crate::services::unavailable("Apache Airflow", &why);
                return None;
            }
        };
        let a = Airflow {
            bin: venv.join("bin/airflow"),
            home: tempfile::tempdir().expect("airflow home"),
        };
        let o = a
            .cmd(Path::new("/nonexistent"), &[])
            .args(["db", "migrate"])
            .output()
            .expect("migrate");
        assert!(
            o.status.success(),
            "airflow db migrate: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(a)
    }

    fn cmd(&self, config: &Path, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("AIRFLOW_HOME", self.home.path())
            .env(
                "AIRFLOW__CORE__DAGS_FOLDER",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../airflow/dags"),
            )
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("RECKON_BIN", env!("CARGO_BIN_EXE_reckon"))
            .env("RECKON_CONFIG", config)
            .env("RECKON_LOG", "warn");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn dags_test(
        &self,
        config: &Path,
        dag: &str,
        date: &str,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Output {
        self.cmd(config, env)
            .args(["dags", "test", dag, date])
            .args(extra)
            .output()
            .expect("airflow dags test")
    }
}

fn status(config: &Path, date: &str) -> Vec<serde_json::Value> {
    let o = crate::support::run(&[
        "status",
        "--config",
        config.to_str().expect("utf8"),
        "--date",
        date,
        "--json",
    ]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .expect("status json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn all_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_example_dags_run_in_airflow_and_map_exit_codes_to_retries() {
    let Some(af) = Airflow::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 2, 300, 8);

    // A day, one task per channel and stage.
    let o = af.dags_test(&cfg, "reckon_daily", "2026-11-20", &[], &[]);
    assert!(o.status.success(), "{}", all_text(&o));
    for s in status(&cfg, "2026-11-20") {
        assert_eq!(s["status"], "reconciled", "{s}");
        for stage in ["fetch", "normalize", "collect", "reconcile", "report"] {
            assert_eq!(s["stages"][stage]["state"], "done", "{s}");
        }
        let ch = s["channel"].as_str().expect("channel");
        assert!(super::support::file_of(
            &dir.join("output"),
            "results",
            ch,
            "2026-11-20",
            "summary.json"
        )
        .exists());
    }

    // Day 2: wechat's bill fails its totals (exit 3: failed at once, never retried); alipay's
    // bill is missing (exit 75: retried, here once, a second later).
    let bill = dir.join("bills/wechat/tradebill_20261121.csv");
    let text = std::fs::read_to_string(&bill).expect("bill");
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let last = lines.len() - 1;
    lines[last] = lines[last].replacen('`', "`9", 1);
    std::fs::write(&bill, lines.join(eol) + eol).expect("bill");
    std::fs::remove_file(dir.join("bills/alipay/20881234567890120156_20261121.csv.zip"))
        .expect("remove");
    let env = [("RECKON_RETRIES", "1"), ("RECKON_RETRY_DELAY", "1")];
    let o = af.dags_test(&cfg, "reckon_daily", "2026-11-21", &env, &[]);
    let out = all_text(&o);
    assert!(!o.status.success(), "the day should fail: {out}");
    assert_eq!(
        out.matches("reckon exited 3 (bad input), not retried")
            .count(),
        1,
        "{out}"
    );
    assert_eq!(
        out.matches("reckon exited 75 (retry later)").count(),
        2,
        "{out}"
    );
    let st = status(&cfg, "2026-11-21");
    let by = |c: &str| {
        st.iter()
            .find(|s| s["channel"] == c)
            .cloned()
            .expect("channel")
    };
    assert_eq!(by("wechat")["status"], "incomplete");
    assert_eq!(by("alipay")["status"], "waiting");

    // The backfill DAG over both days, on a fresh data set.
    let dir2 = tmp.path().join("d2");
    let cfg2 = generate(&dir2, "2026-11-20", 2, 300, 8);
    let o = af.dags_test(
        &cfg2,
        "reckon_backfill",
        "2026-11-22",
        &[],
        &[
            "--conf",
            r#"{"from": "2026-11-20", "to": "2026-11-21", "channels": "alipay,wechat"}"#,
        ],
    );
    assert!(o.status.success(), "{}", all_text(&o));
    for date in ["2026-11-20", "2026-11-21"] {
        for s in status(&cfg2, date) {
            assert_eq!(s["status"], "reconciled", "{date}: {s}");
        }
    }
}
