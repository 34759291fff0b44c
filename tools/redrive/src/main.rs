//! `redrive given-up` | `redrive quarantine --from DAY [--to DAY]`: see the library's docs.
//! Reads the same environment as `ingest` (DATA_LAKE_BUCKET, DEDUP_TABLE, DEDUP_TTL_SECONDS, the
//! prefixes, METRICS_*) plus STAGING_RETENTION_DAYS; prints a JSON report; exits non-zero when
//! anything was left undone.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipeline::config::{CompactConfig, IngestConfig};
use pipeline::given_up::GIVEN_UP_PREFIX;
use pipeline::time::Date;
use redrive::Redrive;

#[derive(Parser)]
#[command(
    about = "Send given-up batches, or quarantined records a newer catalogue accepts, through ingest again"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay the batches the event source mapping gave up on (its S3 on-failure destination).
    GivenUp {
        /// Where the on-failure objects are: Lambda writes under aws/lambda/{mapping UUID}/.
        #[arg(long, default_value = GIVEN_UP_PREFIX)]
        prefix: String,
        /// Replay objects that already have a receipt too (changes nothing; claims are re-owned).
        #[arg(long)]
        again: bool,
    },
    /// Validate the quarantine lines of arrival days FROM..=TO again; stage those now valid.
    Quarantine {
        #[arg(long, value_parser = parse_day)]
        from: Date,
        /// Defaults to FROM.
        #[arg(long, value_parser = parse_day)]
        to: Option<Date>,
    },
}

fn parse_day(text: &str) -> Result<Date, String> {
    Date::parse(text).ok_or_else(|| format!("`{text}` is not a date YYYY-MM-DD"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pipeline::logging::init_with_default("warn");
    let args = Args::parse();
    // Metrics go under the redrive's own FunctionName unless the environment names one.
    let lookup = |name: &str| match (name, std::env::var(name).ok()) {
        ("AWS_LAMBDA_FUNCTION_NAME", None) => Some("redrive".to_string()),
        (_, value) => value,
    };
    let config = IngestConfig::from_lookup(&lookup).context("configuration")?;
    let retention = CompactConfig::from_lookup(&lookup)
        .context("configuration")?
        .staging_retention_days;
    let redrive = Redrive {
        ingest: ingest::Ingest::from_config(&config).await,
        staging_retention_days: retention,
        now: pipeline::time::now_micros,
    };
    let (report, problems) = match args.command {
        Command::GivenUp { prefix, again } => {
            let report = redrive.given_up(&prefix, again).await?;
            let problems = report.problems.len();
            (serde_json::to_value(report)?, problems)
        }
        Command::Quarantine { from, to } => {
            let report = redrive.quarantine(from, to.unwrap_or(from)).await?;
            let problems = report.problems.len();
            (serde_json::to_value(report)?, problems)
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if problems > 0 {
        anyhow::bail!("{problems} objects were not fully redriven; see `problems`");
    }
    Ok(())
}
