//! The Rust Kafka-protocol client (producer, consumer, admin), generic over its transport so it
//! also runs inside the simulator. Not written yet: see the "Rust client library" issue.
