//! Alerts: one webhook message per run and cause (a stage that failed after its retries, a
//! bill that has not arrived by its deadline, a category past its threshold), never one per
//! record. The webhook's URL is a secret: the config names the environment variable that holds
//! it, and it is never logged. A webhook that fails is logged and never fails the run.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// `[alerts]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The environment variable holding the webhook URL.
    pub webhook_url_env: String,
    /// The message body: `json` (generic), `slack` or `lark` (Lark / Feishu custom bot).
    #[serde(default = "default_format")]
    pub format: String,
    /// Seconds to wait for the webhook.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_format() -> String {
    "json".into()
}
fn default_timeout() -> u64 {
    10
}

impl AlertsConfig {
    /// Checks the format name.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !["json", "slack", "lark"].contains(&self.format.as_str()) {
            return Err(format!(
                "alerts.format {:?} must be json, slack or lark",
                self.format
            ));
        }
        if self.webhook_url_env.trim().is_empty() {
            return Err("alerts.webhook_url_env must name an environment variable".into());
        }
        Ok(())
    }
}

/// Why an alert goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A stage failed after its retries.
    StageFailed,
    /// The bill had not arrived by the channel's deadline.
    BillLate,
    /// A category passed its threshold.
    Threshold,
    /// The stream's day and the batch job's day disagree on some records.
    StreamDiffers,
}

impl Cause {
    /// The cause as written in the message.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::StageFailed => "stage_failed",
            Cause::BillLate => "bill_late",
            Cause::Threshold => "threshold_passed",
            Cause::StreamDiffers => "stream_differs",
        }
    }
}

/// One alert.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Why.
    pub cause: Cause,
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The stage, when one failed.
    pub stage: Option<String>,
    /// The exit code the run ends with.
    pub exit_code: i32,
    /// A sentence for a person.
    pub message: String,
    /// Facts for machines (the error, the categories past their thresholds, …).
    pub detail: Value,
}

impl Alert {
    fn title(&self) -> String {
        format!(
            "reckon {}: {} {}{}",
            self.cause.as_str(),
            self.channel,
            self.bill_date,
            self.stage
                .as_deref()
                .map(|s| format!(" (stage {s})"))
                .unwrap_or_default()
        )
    }

    /// The request body in `format`.
    pub fn body(&self, format: &str) -> Value {
        let text = format!("{}\n{}", self.title(), self.message);
        match format {
            "slack" => json!({ "text": text }),
            "lark" => json!({ "msg_type": "text", "content": { "text": text } }),
            _ => json!({
                "source": "reckon",
                "cause": self.cause.as_str(),
                "channel": self.channel,
                "bill_date": self.bill_date,
                "stage": self.stage,
                "exit_code": self.exit_code,
                "message": self.message,
                "detail": self.detail,
                "host": crate::lease::host_name(),
                "invocation": crate::lease::invocation_id(),
            }),
        }
    }
}

/// Sends `alert` when alerts are configured; a failure is logged (without the URL) and
/// swallowed. Returns whether the webhook accepted it.
pub async fn send(cfg: Option<&AlertsConfig>, alert: &Alert) -> bool {
    let Some(cfg) = cfg else {
        return false;
    };
    let Ok(url) = std::env::var(&cfg.webhook_url_env) else {
        tracing::warn!(
            cause = alert.cause.as_str(),
            variable = cfg.webhook_url_env,
            "alert not sent: the webhook variable is not set"
        );
        return false;
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "alert not sent: no HTTP client");
            return false;
        }
    };
    let body = alert.body(&cfg.format).to_string();
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {
            tracing::info!(
                cause = alert.cause.as_str(),
                channel = alert.channel,
                "alert sent"
            );
            true
        }
        Ok(r) => {
            tracing::warn!(
                cause = alert.cause.as_str(),
                status = r.status().as_u16(),
                "alert not accepted by the webhook"
            );
            false
        }
        Err(e) => {
            // reqwest's error names the URL, which is a secret: say only what kind it was.
            let kind = crate::fetchers::http::failure_kind(&e);
            tracing::warn!(
                cause = alert.cause.as_str(),
                "alert not sent: the webhook {kind}"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            cause: Cause::StageFailed,
            channel: "alipay".into(),
            bill_date: "2026-11-20".into(),
            stage: Some("normalize".into()),
            exit_code: 3,
            message: "bad input: totals".into(),
            detail: json!({ "error": "x" }),
        }
    }

    #[test]
    fn each_format_carries_the_cause_channel_and_date() {
        let a = alert();
        let j = a.body("json");
        assert_eq!(j["cause"], "stage_failed");
        assert_eq!(j["exit_code"], 3);
        let s = a.body("slack");
        let t = s["text"].as_str().expect("text");
        assert!(
            t.contains("stage_failed") && t.contains("alipay 2026-11-20"),
            "{t}"
        );
        let l = a.body("lark");
        assert_eq!(l["msg_type"], "text");
        assert!(l["content"]["text"]
            .as_str()
            .expect("text")
            .contains("normalize"));
    }

    #[test]
    fn a_format_is_checked() {
        let mut c = AlertsConfig {
            webhook_url_env: "X".into(),
            format: "teams".into(),
            timeout_secs: 1,
        };
        assert!(c.validate().is_err());
        c.format = "lark".into();
        assert!(c.validate().is_ok());
    }
}
