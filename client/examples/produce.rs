//! Sends records to a topic and prints where each landed.
//!
//! `cargo run -p oxbow-client --example produce -- 127.0.0.1:9092 events hello world`

use oxbow_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bootstrap), Some(topic)) = (args.next(), args.next()) else {
        eprintln!("usage: produce BOOTSTRAP TOPIC VALUE...");
        std::process::exit(2);
    };
    let client = Client::new(ClientConfig::new(&bootstrap))?;
    let producer = Producer::new(client, ProducerConfig::default())?;
    let mut waits = Vec::new();
    for value in args {
        waits.push((
            value.clone(),
            producer.send(ProducerRecord::new(&topic, value)).await?,
        ));
    }
    for (value, wait) in waits {
        match wait.await {
            Ok(at) => println!("{value}: partition {} offset {}", at.partition, at.offset),
            Err(e) => println!("{value}: {e}"),
        }
    }
    Ok(())
}
