//! NATS JetStream: both sides' subjects live in one stream (created with file storage when it
//! is missing); each side is read by an ordered consumer (ephemeral, no acknowledgements, in
//! stream order) filtered on its subject and started at the stream sequence after the last
//! one the state committed. A message's partition is its subject (`payments.platform.eu`, …):
//! each subject has its own watermark. A consumer lost with the broker (a restart, a network
//! cut) is created again from the sequence after the last one it handed over.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{Delivery, Feed, Subjects};
use crate::error::{Error, Result};
use crate::stream::record::{Position, Side};
use crate::stream::StreamOptions;

/// Connects and starts one reader per side.
pub async fn start(
    url: &str,
    subjects: &Subjects,
    options: &StreamOptions,
    resume: &BTreeMap<(Side, String), u64>,
    tx: mpsc::Sender<Feed>,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, String)> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(options.connect_timeout_secs))
        .name("reckon stream")
        .connect(url)
        .await
        .map_err(|e| Error::Unavailable(format!("NATS at {url}: {e}")))?;
    let js = jetstream::new(client);
    let name = options.nats_stream.clone();
    let config = jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subjects.platform.clone(), subjects.channel.clone()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let stream = js.get_or_create_stream(config).await.map_err(|e| {
        Error::Unavailable(format!("NATS at {url}: the JetStream stream {name}: {e}"))
    })?;
    let mut readers = Vec::new();
    for (side, subject) in subjects.sides() {
        // The side's consumer delivers in stream order, and a micro-batch commits a prefix of
        // it: every message before the latest committed one of any of its subjects is done.
        let next = resume
            .iter()
            .filter(|((s, _), _)| *s == side)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        let reader = Reader {
            stream: stream.clone(),
            side,
            subject: subject.to_string(),
            next,
            tx: tx.clone(),
        };
        readers.push(tokio::spawn(reader.run()));
    }
    let describe = format!(
        "NATS {url}, stream {name}: platform {}, channel {}",
        subjects.platform, subjects.channel
    );
    Ok((readers, describe))
}

struct Reader {
    stream: jetstream::stream::Stream,
    side: Side,
    subject: String,
    /// The next stream sequence to hand over (0: from the start).
    next: u64,
    tx: mpsc::Sender<Feed>,
}

impl Reader {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.read().await {
                // The queue's receiver is gone: the stream is stopping.
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(side = self.side.as_str(), subject = %self.subject, error = %e,
                        wait_ms = backoff.as_millis() as u64, "NATS reader lost its consumer; creating it again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads until the queue closes (`Ok`) or the consumer fails (`Err`).
    async fn read(&mut self) -> std::result::Result<(), String> {
        let deliver_policy = match self.next {
            0 | 1 => DeliverPolicy::All,
            n => DeliverPolicy::ByStartSequence { start_sequence: n },
        };
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("reading: {e}"))?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| format!("reading: {e}"))?;
            let info = m.info().map_err(|e| format!("a message's metadata: {e}"))?;
            let (seq, published) = (
                info.stream_sequence,
                i64::try_from(info.published.unix_timestamp_nanos() / 1000).ok(),
            );
            if seq < self.next {
                continue;
            }
            let d = Delivery {
                side: self.side,
                position: Position {
                    partition: m.subject.to_string(),
                    offset: seq,
                },
                payload: m.payload.to_vec(),
                published,
            };
            if self.tx.send(Ok(d)).await.is_err() {
                return Ok(());
            }
            self.next = seq + 1;
        }
        Err("the consumer's messages ended".into())
    }
}
