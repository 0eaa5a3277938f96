//! Where the stream's messages come from: one interface ([`Source`]) over the brokers reckon
//! reads, NATS JetStream ([`nats`]) and Kafka ([`kafka`]). A source starts at the positions the
//! state committed (the next message of each partition), and hands over messages in micro-
//! batches; it never acknowledges anything to the broker itself: what is processed is what the
//! state's transaction says, so a consumer killed mid-batch resumes exactly where the last
//! committed batch ended.

pub mod kafka;
pub mod nats;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::record::{Position, Side};
use crate::error::{Error, Result};

/// One message as a source hands it over.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub side: Side,
    pub position: Position,
    pub payload: Vec<u8>,
    /// When the broker received it (microseconds since the epoch), when it says.
    pub published: Option<i64>,
}

/// What a broker's reader sends: a message, or a failure the stream stops on.
pub type Feed = std::result::Result<Delivery, Error>;

/// Where each side's messages are: a NATS subject filter, or a Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    pub platform: String,
    pub channel: String,
}

impl Subjects {
    /// Each side with its subject.
    pub fn sides(&self) -> [(Side, &str); 2] {
        [
            (Side::Platform, self.platform.as_str()),
            (Side::Channel, self.channel.as_str()),
        ]
    }
}

/// A connected source: readers (one task per side or partition set) feeding one queue.
pub struct Source {
    feed: mpsc::Receiver<Feed>,
    /// Keeps the readers running; dropping the source stops them.
    _readers: Vec<tokio::task::JoinHandle<()>>,
    /// What it reads, for logs.
    pub describe: String,
}

/// Messages a reader may run ahead of the micro-batches.
const QUEUE: usize = 50_000;

impl Source {
    /// Connects to `broker` (`nats://…` or `kafka://…`) and starts reading each side's
    /// subject from the positions in `resume` (the next position per partition).
    pub async fn connect(
        broker: &str,
        subjects: &Subjects,
        options: &super::StreamOptions,
        resume: &BTreeMap<(Side, String), u64>,
    ) -> Result<Source> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (readers, describe) = if broker.starts_with("nats://") {
            nats::start(broker, subjects, options, resume, tx).await?
        } else if let Some(servers) = broker.strip_prefix("kafka://") {
            kafka::start(servers, subjects, options, resume, tx).await?
        } else {
            return Err(Error::Config(format!(
                "[stream] broker = {broker:?}: give nats://HOST:PORT or kafka://HOST:PORT[,HOST:PORT…]"
            )));
        };
        Ok(Source {
            feed: rx,
            _readers: readers,
            describe,
        })
    }

    /// The next micro-batch: up to `max` messages, waiting at most `wait` for the first and
    /// taking what else has arrived by then. Empty when nothing came.
    pub async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            let got = match out.is_empty() {
                true => tokio::time::timeout_at(deadline, self.feed.recv()).await,
                false => match self.feed.try_recv() {
                    Ok(d) => Ok(Some(d)),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Let what is in flight arrive, up to the batch's time.
                        match tokio::time::timeout_at(deadline, self.feed.recv()).await {
                            Ok(d) => Ok(d),
                            Err(_) => break,
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => Ok(None),
                },
            };
            match got {
                Err(_) => break,
                Ok(None) => {
                    return Err(Error::Unavailable(format!(
                        "{}: every reader stopped",
                        self.describe
                    )))
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(d))) => out.push(d),
            }
        }
        Ok(out)
    }
}
