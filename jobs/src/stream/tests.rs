//! The stream's decisions, micro-batch by micro-batch, on its embedded state (no broker: the
//! deliveries are made here, as a source would hand them over).

use super::*;
use crate::stream::record::Position;

const DAY: &str = "2026-11-21";

fn config(dir: &std::path::Path) -> Config {
    let text = r#"storage_root = "output"
engine = "local"

[warehouse]
orders = "warehouse/orders"
refunds = "warehouse/refunds"

[[channel]]
name = "wechat"
format = "wechat_trade_v3"
time_zone = "Asia/Shanghai"
source = { kind = "drop_folder", path = "bills/wechat", pattern = "tradebill_{yyyymmdd}.csv" }

[channel.stream]
window_secs = 60
grace_secs = 60

[stream]
broker = "nats://127.0.0.1:9"
platform = "payments.platform.>"
channel = "payments.channel.>"
lateness_secs = 0
"#;
    let path = dir.join("reckon.toml");
    std::fs::write(&path, text).expect("config");
    Config::load(&path).expect("config loads")
}

/// A delivery of `side` at `offset` of its one partition.
fn delivery(side: Side, offset: u64, order: &str, txn: &str, amount: &str) -> Delivery {
    let mut body = serde_json::json!({
        "channel": "wechat",
        "txn_type": "PAY",
        "merchant_order_id": order,
        "amount": amount,
        "status": "SUCCESS",
        "event_time": format!("{DAY}T10:00:00+08:00"),
    });
    if side == Side::Channel {
        body["channel_txn_id"] = txn.into();
    } else {
        body["platform_order_id"] = format!("P-{order}").into();
    }
    Delivery {
        side,
        position: Position {
            partition: side.as_str().into(),
            offset,
        },
        payload: body.to_string().into_bytes(),
        published: None,
    }
}

fn run_options() -> RunOptions {
    RunOptions {
        exit_when_idle: None,
        holder: Some("test".into()),
    }
}

#[tokio::test]
async fn a_copy_of_a_duplicate_beside_a_waiting_record_is_counted_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = config(tmp.path());
    let first = delivery(Side::Channel, 0, "M1", "4200A", "10.00");
    // A second, different notification of the same key: a genuine duplicate.
    let duplicate = delivery(Side::Channel, 1, "M1", "4200B", "10.00");
    let copy = |d: &Delivery, offset: u64| Delivery {
        position: Position {
            partition: d.position.partition.clone(),
            offset,
        },
        ..d.clone()
    };
    {
        let mut stream = Stream::open(&config, &run_options()).await.expect("open");
        // The first waits; the duplicate is taken in beside it, a batch later.
        stream.step(vec![first.clone()]).await.expect("batch 1");
        stream.step(vec![duplicate.clone()]).await.expect("batch 2");
        // While the first still waits, a copy of the duplicate: the state is not asked about
        // a key the pool holds, and the copy is still known as one.
        stream
            .step(vec![copy(&duplicate, 2)])
            .await
            .expect("a copy of the duplicate");
        assert_eq!(stream.figures.records, 2);
        assert_eq!(stream.figures.redelivered, 1);
        assert_eq!(stream.pool.len(), 1);
        stream.state.release("test").await.expect("release");
    }
    // After a restart, the waiting record is resumed knowing its duplicate.
    let mut stream = Stream::open(&config, &run_options()).await.expect("reopen");
    assert_eq!(stream.pool.len(), 1);
    stream
        .step(vec![copy(&duplicate, 3), copy(&first, 4)])
        .await
        .expect("copies after a restart");
    assert_eq!(stream.figures.records, 0);
    assert_eq!(stream.figures.redelivered, 2);
    // The platform's record pairs with the waiting one; a copy of the duplicate in the same
    // batch, after the pairing, is still a copy.
    stream
        .step(vec![
            delivery(Side::Platform, 0, "M1", "", "10.00"),
            copy(&duplicate, 5),
        ])
        .await
        .expect("pair, then a copy");
    assert_eq!(stream.figures.records, 1);
    assert_eq!(stream.figures.pairs, 1);
    assert_eq!(stream.figures.redelivered, 3);
    assert!(stream.pool.is_empty());
    // And once nothing waits, the state knows all three.
    stream
        .step(vec![copy(&duplicate, 6), copy(&first, 7)])
        .await
        .expect("copies of decided records");
    assert_eq!(stream.figures.redelivered, 5);
    assert_eq!(stream.figures.records, 1);
}
