//! Kafka (through librdkafka): each side is a topic; every partition of both topics is
//! assigned to this consumer explicitly (no consumer group rebalancing: the state's lease says
//! which process reads), each started at the offset after the last one the state committed,
//! or at the beginning. A message's partition is `topic/partition`: each has its own
//! watermark. Offsets are never committed to Kafka: the state's transaction is the record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{Delivery, Feed, Subjects};
use crate::error::{Error, Result};
use crate::stream::record::{Position, Side};
use crate::stream::StreamOptions;

/// The partition name of `topic`'s partition `p`.
pub fn partition_name(topic: &str, p: i32) -> String {
    format!("{topic}/{p}")
}

/// Connects to `servers`, assigns every partition of both topics and starts the reader.
pub async fn start(
    servers: &str,
    subjects: &Subjects,
    options: &StreamOptions,
    resume: &BTreeMap<(Side, String), u64>,
    tx: mpsc::Sender<Feed>,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, String)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "reckon-stream")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "socket.connection.setup.timeout.ms",
            (options.connect_timeout_secs * 1000).to_string(),
        )
        .create()
        .map_err(|e| Error::Config(format!("Kafka client for {servers}: {e}")))?;
    let consumer = Arc::new(consumer);
    let timeout = Duration::from_secs(options.connect_timeout_secs);
    let mut assignment = TopicPartitionList::new();
    let mut sides = BTreeMap::new();
    for (side, topic) in subjects.sides() {
        let c = consumer.clone();
        let t = topic.to_string();
        let metadata = crate::store::off_task(move || {
            c.fetch_metadata(Some(&t), timeout)
                .map_err(|e| Error::Unavailable(format!("Kafka topic {t}: {e}")))
        })
        .await?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::Unavailable(format!(
                "Kafka at {servers}: the topic {topic} has no partitions (does it exist?)"
            )));
        }
        for p in partitions {
            let offset = match resume.get(&(side, partition_name(topic, p))) {
                Some(next) => Offset::Offset(i64::try_from(*next).unwrap_or(i64::MAX)),
                None => Offset::Beginning,
            };
            assignment
                .add_partition_offset(topic, p, offset)
                .map_err(|e| Error::Config(format!("Kafka topic {topic} partition {p}: {e}")))?;
        }
        sides.insert(topic.to_string(), side);
    }
    consumer.assign(&assignment).map_err(|e| {
        Error::Unavailable(format!("Kafka at {servers}: assigning partitions: {e}"))
    })?;
    let reader = tokio::spawn(read(consumer, sides, tx));
    let describe = format!(
        "Kafka {servers}: platform topic {}, channel topic {} ({} partitions)",
        subjects.platform,
        subjects.channel,
        assignment.count()
    );
    Ok((vec![reader], describe))
}

/// Hands every message over, in each partition's order; librdkafka reconnects by itself.
async fn read(
    consumer: Arc<StreamConsumer>,
    sides: BTreeMap<String, Side>,
    tx: mpsc::Sender<Feed>,
) {
    loop {
        let d = match consumer.recv().await {
            Ok(m) => {
                let Some(side) = sides.get(m.topic()).copied() else {
                    continue;
                };
                Delivery {
                    side,
                    position: Position {
                        partition: partition_name(m.topic(), m.partition()),
                        offset: u64::try_from(m.offset()).unwrap_or(0),
                    },
                    payload: m.payload().unwrap_or_default().to_vec(),
                    published: m.timestamp().to_millis().map(|ms| ms * 1000),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Kafka reader: an error; reading on");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if tx.send(Ok(d)).await.is_err() {
            return;
        }
    }
}
