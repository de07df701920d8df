//! Consume-transform-produce, exactly once: reads INPUT as a member of GROUP (read_committed),
//! writes each record's value upper-cased to OUTPUT, and commits the group's offsets in the
//! same transaction, so that every input's output is visible to read_committed consumers
//! exactly once, whatever fails. Ctrl-C stops it; run it again (same transactional id) and it
//! goes on where the last committed transaction left off, fencing any older instance.
//!
//! `cargo run -p oxbow-client --example transform -- 127.0.0.1:9092 input output transformer`

use std::time::Duration;

use oxbow_client::{
    Client, ClientConfig, GroupConfig, GroupConsumer, ProducerConfig, ProducerRecord,
    TransactionError, TransactionalProducer,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bootstrap), Some(input), Some(output), Some(group)) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        eprintln!("usage: transform BOOTSTRAP INPUT OUTPUT GROUP");
        eprintln!("  reads INPUT as a member of GROUP and writes OUTPUT, exactly once");
        std::process::exit(2);
    };
    let client = Client::new(ClientConfig::new(&bootstrap))?;
    let mut config = GroupConfig::new(&group);
    // Neither aborted input nor offsets still pending in a transaction.
    config.consumer.read_committed = true;
    let mut consumer = GroupConsumer::new(client.clone(), config, &[input.as_str()]);
    let producer = TransactionalProducer::new(
        client,
        ProducerConfig {
            // One transactional id per input partition set: a restarted process takes over
            // (and fences) its predecessor.
            transactional_id: Some(format!("{group}-transformer")),
            ..ProducerConfig::default()
        },
    )?;
    producer.init_transactions().await?;
    loop {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            continue;
        }
        producer.begin().await?;
        let done: Result<(), TransactionError> = async {
            for record in &records {
                let value = record.value.as_deref().unwrap_or_default();
                let upper = String::from_utf8_lossy(value).to_uppercase();
                producer
                    .send(ProducerRecord::new(output.as_str(), upper))
                    .await?;
            }
            producer
                .send_offsets_to_transaction(&consumer.positions(), &consumer.group_metadata())
                .await?;
            producer.commit().await
        }
        .await;
        match done {
            Ok(()) => println!("committed {} records", records.len()),
            // Fenced by a newer instance (or the producer cannot go on): stop.
            Err(TransactionError::Fatal(e)) => return Err(e.into()),
            // The transaction did not commit: abort it and read its input again.
            Err(e) => {
                eprintln!("aborting: {e}");
                producer.abort().await?;
                consumer.rewind();
            }
        }
    }
}
