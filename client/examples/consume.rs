//! Prints every record of a topic from the beginning, then waits for more (Ctrl-C stops).
//!
//! `cargo run -p oxbow-client --example consume -- 127.0.0.1:9092 events`

use std::time::Duration;

use oxbow_client::{Client, ClientConfig, Consumer, ConsumerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bootstrap), Some(topic)) = (args.next(), args.next()) else {
        eprintln!("usage: consume BOOTSTRAP TOPIC");
        std::process::exit(2);
    };
    let client = Client::new(ClientConfig::new(&bootstrap))?;
    let partitions = client.topic(&topic).await?.partitions.len() as i32;
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    let assigned: Vec<(&str, i32)> = (0..partitions).map(|p| (topic.as_str(), p)).collect();
    consumer.assign(&assigned);
    loop {
        for record in consumer.poll(Duration::from_secs(1)).await? {
            let value = record.value.as_deref().map(String::from_utf8_lossy);
            println!(
                "{} {} {}",
                record.partition,
                record.offset,
                value.unwrap_or_default()
            );
        }
    }
}
