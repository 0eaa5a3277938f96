//! `reckon normalize`: one bill file through a template, for analysts and onboarding.

use std::path::PathBuf;

use reckon::config::parse_date;
use reckon::error::Result;

use super::print_json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A built-in template name (alipay_trade_v1, …) or a template file.
    #[arg(long)]
    format: String,
    /// The bill file, as the channel delivers it (zip, gzip or plain).
    #[arg(long)]
    input: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Bill date written into the rows, YYYY-MM-DD; default: the local date of the first row.
    #[arg(long)]
    bill_date: Option<String>,
    /// Channel name written into the rows; default: the template name's first word.
    #[arg(long)]
    channel: Option<String>,
    /// More rejected rows than this fails the file.
    #[arg(long, default_value_t = 1000)]
    max_rejected: u64,
}

pub fn run(a: Args) -> Result<i32> {
    let bill_date = a.bill_date.as_deref().map(parse_date).transpose()?;
    let n = match reckon::formats::normalize_to_dir(
        &a.format,
        &a.input,
        &a.out,
        bill_date,
        a.channel.as_deref(),
        a.max_rejected,
    ) {
        Ok(n) => n,
        Err(e) => {
            print_json(&serde_json::json!({
                "input": a.input.display().to_string(), "format": a.format,
                "status": e.status(), "error": e.to_string(),
            }));
            return Err(e);
        }
    };
    let s = &n.stats;
    eprintln!(
        "{}: {} records read, {} written, {} rejected, {} skipped (template {})",
        a.input.display(),
        s.rows_read,
        s.rows_written,
        s.rows_rejected,
        s.rows_skipped,
        n.template
    );
    for t in &s.totals {
        let verdict = match (&t.skipped, t.ok) {
            (Some(why), _) => format!("skipped: {why}"),
            (None, true) => "ok".into(),
            (None, false) => "MISMATCH".into(),
        };
        eprintln!(
            "  totals {}: bill {} = parsed {} {verdict}",
            t.value, t.expected, t.parsed
        );
    }
    if s.totals.is_empty() {
        eprintln!("  totals: the template checks none");
    }
    eprintln!(
        "  wrote {} and {}",
        n.normalized.display(),
        n.rejected.display()
    );
    print_json(&serde_json::json!({
        "input": a.input.display().to_string(), "format": n.template, "status": "ok",
        "bill_date": s.bill_date.map(|d| d.to_string()),
        "rows_read": s.rows_read, "rows_written": s.rows_written,
        "rows_rejected": s.rows_rejected, "rows_skipped": s.rows_skipped,
        "totals": s.totals,
        "normalized": n.normalized.display().to_string(),
        "rejected": n.rejected.display().to_string(),
    }));
    Ok(0)
}
