//! `reckon desk`: the review desk's list from the command line (for scripts, and for a look
//! without a browser).

use std::path::PathBuf;

use reckon::config::{parse_date, Config};
use reckon::desk::access::{add_token as add_token_to, add_user as add_user_to};
use reckon::desk::query::{differences, Filter, Sort};
use reckon::desk::Role;
use reckon::error::{Error, Result};
use rust_decimal::Decimal;

use super::print_json;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// The committed differences of a range of days, filtered, counted, summed and paged:
    /// a table, then the page as one JSON line.
    List(ListArgs),
    /// The desk's users (the users file of `[desk] users`).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API tokens for scripts (the tokens file of `[desk] tokens`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Adds a user, or replaces one of the same name. The password is read from standard
    /// input (one line), never from the command line.
    Add(UserArgs),
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Makes a token and prints it once; the tokens file keeps only its SHA-256.
    Add(UserArgs),
}

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    name: String,
    /// viewer, resolver, approver or admin.
    #[arg(long)]
    role: Role,
    /// No password: the user logs in through the trusted reverse proxy only.
    #[arg(long)]
    proxy_only: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    config: PathBuf,
    /// The first bill date (YYYY-MM-DD).
    #[arg(long)]
    from: String,
    /// The last bill date (default: --from).
    #[arg(long)]
    to: Option<String>,
    /// Only these channels (repeatable); all when absent.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Only these categories (repeatable).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// Only these ageing states: new, persisting, resolved (repeatable).
    #[arg(long = "state")]
    states: Vec<String>,
    /// The difference's size (the larger side) at least.
    #[arg(long)]
    min_amount: Option<Decimal>,
    /// The difference's size at most.
    #[arg(long)]
    max_amount: Option<Decimal>,
    /// First seen on or before this date.
    #[arg(long)]
    first_seen_by: Option<String>,
    /// An id or key, exactly (diff_id, match key, the channel's, merchant's or platform's
    /// order id, the refund id).
    #[arg(long)]
    search: Option<String>,
    #[arg(long, value_enum, default_value = "bill-date")]
    sort: Sort,
    /// Largest first.
    #[arg(long)]
    desc: bool,
    /// From 0.
    #[arg(long, default_value_t = 0)]
    page: usize,
    #[arg(long, default_value_t = 50)]
    page_size: usize,
}

pub async fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::List(a) => list(a).await,
        Command::User {
            command: UserCommand::Add(a),
        } => add_user(a),
        Command::Token {
            command: TokenCommand::Add(a),
        } => add_token(a),
    }
}

fn add_user(a: UserArgs) -> Result<i32> {
    let config = Config::load(&a.config)?;
    let path = config.desk.users_file(&config.base_dir);
    let password = if a.proxy_only {
        None
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::Other(format!("reading the password from standard input: {e}")))?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        if p.chars().count() < 12 {
            return Err(Error::Config(
                "the password (standard input) must have at least 12 characters".into(),
            ));
        }
        Some(p)
    };
    add_user_to(&path, &a.name, a.role, password.as_deref())?;
    eprintln!("{} is a {} in {}", a.name, a.role.name(), path.display());
    Ok(0)
}

fn add_token(a: UserArgs) -> Result<i32> {
    let config = Config::load(&a.config)?;
    let path = config.desk.tokens_file(&config.base_dir);
    let token = add_token_to(&path, &a.name, a.role)?;
    eprintln!(
        "a token for {} ({}) is kept in {} as its SHA-256; it is shown once, here:",
        a.name,
        a.role.name(),
        path.display()
    );
    println!("{token}");
    Ok(0)
}

async fn list(a: ListArgs) -> Result<i32> {
    let config = Config::load(&a.config)?;
    let channels = config.channel_names(&[])?;
    let from = parse_date(&a.from)?;
    let filter = Filter {
        channels: a.channels,
        from,
        to: a.to.as_deref().map(parse_date).transpose()?.unwrap_or(from),
        categories: a.categories,
        states: a.states,
        min_amount: a.min_amount,
        max_amount: a.max_amount,
        first_seen_by: a.first_seen_by.as_deref().map(parse_date).transpose()?,
        search: a.search,
        keys: None,
        sort: a.sort,
        descending: a.desc,
        page: a.page,
        page_size: a.page_size,
    };
    let store = reckon::pipeline::store(&config)?;
    let ctx = datafusion::prelude::SessionContext::new();
    let started = std::time::Instant::now();
    let page = differences(&store, &ctx, &channels, &filter).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let show = |d: Option<Decimal>| d.map_or("-".to_string(), |d| d.to_string());
    println!(
        "{} differences; channel {} platform {} delta {}; page {} ({} rows); {ms:.0} ms",
        page.total,
        page.channel_sum,
        page.platform_sum,
        page.delta_sum,
        filter.page,
        page.rows.len()
    );
    for r in &page.rows {
        println!(
            "  {}  {} {:<22} {:<10} {:>12} {:>12} {:>10}  {}",
            &r.diff_id[..r.diff_id.len().min(16)],
            r.bill_date,
            r.category,
            r.state.as_deref().unwrap_or("-"),
            show(r.channel_amount),
            show(r.platform_amount),
            show(r.amount_delta),
            r.match_key.as_deref().unwrap_or("-"),
        );
    }
    for (ch, d) in &page.not_committed {
        eprintln!("not committed: {ch} {d}");
    }
    print_json(&serde_json::json!({ "page": page, "milliseconds": ms }));
    Ok(0)
}
