//! `producer`: put fake events from the catalogue on a Kinesis stream.
//!
//!   AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run -p events --bin producer -- --stream events --events 10000

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Put realistic fake events from events/catalogue.json on a Kinesis stream")]
struct Args {
    /// Stream name.
    #[arg(long, default_value = "events")]
    stream: String,
    /// How many user records to put.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    #[command(flatten)]
    options: events::Options,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(
            aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1"),
        )
        .load()
        .await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let bar = ProgressBar::new(args.events).with_style(ProgressStyle::with_template(
        "{spinner} producing {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
    )?);
    let options = events::Options {
        events: args.events,
        ..args.options
    };
    let produced =
        events::produce(&kinesis, &args.stream, &options, |n| bar.set_position(n)).await?;
    bar.finish();
    println!(
        "put {} events ({} valid, {} producer retries, {} malformed) as {} Kinesis records in {} PutRecords calls ({} entries re-sent) in {:.1} s",
        produced.events,
        produced.valid,
        produced.duplicates,
        produced.malformed.values().sum::<u64>(),
        produced.kinesis_records,
        produced.put_records_calls,
        produced.entries_resent,
        produced.elapsed.as_secs_f64()
    );
    Ok(())
}
