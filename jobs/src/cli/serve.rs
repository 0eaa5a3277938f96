//! `reckon serve`: the review desk's web application.

use std::path::PathBuf;

use reckon::config::Config;
use reckon::desk::web::{serve, App, DEFAULT_LISTEN};
use reckon::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// The address to listen on (overrides `[desk] listen`; default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
}

pub async fn run(a: Args) -> Result<i32> {
    let config = Config::load(&a.config)?;
    let listen = a
        .listen
        .or_else(|| config.desk.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let app = App::open(&config).await?;
    serve(app, &listen).await?;
    Ok(0)
}
