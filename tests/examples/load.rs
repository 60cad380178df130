//! Load generator for scripts/bench/produce-consume.sh: produces N records of a fixed size as
//! fast as librdkafka allows, or reads a whole topic back, and prints one result line.
//!
//! ```text
//! load produce --bootstrap 127.0.0.1:9092 --topic t --records 500000 --size 100 --acks 1
//! load consume --bootstrap 127.0.0.1:9092 --topic t --records 500000
//! ```
//! Output: `<mode> records=N bytes=B seconds=S records_per_s=R mb_per_s=M errors=E`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use runnel_e2e::Result;

struct Args {
    mode: String,
    bootstrap: String,
    topic: String,
    records: u64,
    size: usize,
    acks: String,
    timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("usage: load produce|consume --bootstrap .. --topic ..")?;
    let mut parsed = Args {
        mode,
        bootstrap: "127.0.0.1:9092".into(),
        topic: "bench".into(),
        records: 100_000,
        size: 100,
        acks: "1".into(),
        timeout: Duration::from_secs(300),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bootstrap" => parsed.bootstrap = value,
            "--topic" => parsed.topic = value,
            "--records" => parsed.records = value.parse()?,
            "--size" => parsed.size = value.parse()?,
            "--acks" => parsed.acks = value,
            "--timeout-s" => parsed.timeout = Duration::from_secs(value.parse()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(parsed)
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// Producer context counting delivery reports; shares its counters with `main`.
struct Counting(Arc<Counters>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn report(mode: &str, records: u64, bytes: u64, elapsed: Duration, errors: u64) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!(
        "{mode} records={records} bytes={bytes} seconds={seconds:.3} records_per_s={:.0} \
         mb_per_s={:.1} errors={errors}",
        records as f64 / seconds,
        bytes as f64 / seconds / 1e6,
    );
}

fn produce(args: &Args) -> Result<()> {
    let context = Arc::new(Counters::default());
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000")
        .create_with_context(Counting(Arc::clone(&context)))?;
    let payload = vec![b'x'; args.size];
    let start = Instant::now();
    for i in 0..args.records {
        let key = (i % 1024).to_be_bytes();
        let mut record = BaseRecord::to(&args.topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    // The producer's own thread drains the queue; yield to it briefly.
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(format!("send: {e}").into()),
            }
            if start.elapsed() > args.timeout {
                return Err("timed out enqueueing".into());
            }
        }
    }
    producer.flush(args.timeout)?;
    let elapsed = start.elapsed();
    let delivered = context.delivered.load(Ordering::Relaxed);
    let failed = context.failed.load(Ordering::Relaxed);
    report(
        &format!("produce acks={} size={}", args.acks, args.size),
        delivered,
        delivered * args.size as u64,
        elapsed,
        failed,
    );
    if failed > 0 {
        return Err(format!("{failed} deliveries failed").into());
    }
    Ok(())
}

fn consume(args: &Args) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "runnel-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "1048576")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&args.topic), Duration::from_secs(10))?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic)
        .ok_or("topic not in metadata")?;
    let mut assignment = TopicPartitionList::new();
    for partition in topic.partitions() {
        assignment.add_partition_offset(&args.topic, partition.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let start = Instant::now();
    let (mut records, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    while records < args.records {
        if start.elapsed() > args.timeout {
            return Err(format!("read only {records} of {} records", args.records).into());
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += message.payload_len() as u64;
            }
            Some(Err(_)) => errors += 1,
            None => {}
        }
    }
    report("consume", records, bytes, start.elapsed(), errors);
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    match args.mode.as_str() {
        "produce" => produce(&args),
        "consume" => consume(&args),
        other => Err(format!("unknown mode {other}: produce or consume").into()),
    }
}
