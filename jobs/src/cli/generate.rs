//! `reckon generate` (the labelled synthetic data set) and `reckon demo` (one of it,
//! reconciled on the embedded engine).

use std::path::PathBuf;

use reckon::config::parse_date;
use reckon::error::{Error, Result};
use reckon_gen::{generate, GenerateOptions};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the sample and its outputs.
    #[arg(long, default_value = "reckon-demo")]
    dir: PathBuf,
    /// Payments per channel.
    #[arg(long, default_value_t = 10_000)]
    rows: u64,
    /// Where the outputs go: `s3://bucket/prefix` (with `AWS_*` set), `file:///path` or a
    /// path; default `output/` in the demo's folder.
    #[arg(long)]
    storage: Option<String>,
}

pub async fn demo(a: DemoArgs) -> Result<i32> {
    let (text, code) = reckon::demo::run(&a.dir, a.rows, a.storage.as_deref()).await?;
    print!("{text}");
    Ok(code)
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    out: PathBuf,
    /// First bill date, YYYY-MM-DD.
    #[arg(long)]
    from: String,
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Payments per channel per day.
    #[arg(long)]
    rows: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Only this channel (repeatable: alipay, wechat); both when absent.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Write the warehouse there instead (`s3://bucket/prefix`; an S3-compatible server's
    /// endpoint from AWS_ENDPOINT) and point reckon.toml at it.
    #[arg(long)]
    warehouse_url: Option<String>,
    /// The warehouse tables' format: parquet (Hive partitions) or delta (the same files
    /// with a Delta Lake log).
    #[arg(long, default_value = "parquet", value_parser = ["parquet", "delta"])]
    warehouse_format: String,
    /// Write WeChat Pay's bills gzip-compressed (`tradebill_D.csv.gz`), as its API delivers
    /// them with `tar_type=GZIP`: a large day's bill takes a fifth of the disk.
    #[arg(long)]
    gzip: bool,
}

pub async fn run(a: GenerateArgs) -> Result<i32> {
    let from = parse_date(&a.from)?;
    if a.warehouse_format == "delta"
        && a.warehouse_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres"))
    {
        return Err(Error::Config(
            "--warehouse-format delta needs a file or s3:// warehouse".into(),
        ));
    }
    let g = generate(&GenerateOptions {
        out: a.out.clone(),
        from,
        days: a.days,
        rows: a.rows,
        seed: a.seed,
        channels: a.channels,
        gzip: a.gzip,
    })?;
    // The analysts' SQL beside the config, ready to edit.
    reckon::sql::write_builtin(&a.out.join("sql"))?;
    if a.warehouse_format == "delta" {
        reckon_gen::warehouse::warehouse_to_delta(&a.out).await?;
    }
    if let Some(url) = &a.warehouse_url {
        let n = reckon_gen::warehouse::move_warehouse(&a.out, url).await?;
        eprintln!("warehouse: {n} files written to {url}");
    }
    println!(
        "generated {} bill rows, {} warehouse rows, {} labels; config: {}",
        g.bill_rows,
        g.warehouse_rows,
        g.labels,
        g.config.display()
    );
    Ok(0)
}
