//! Load generator for scripts/bench/produce-consume.sh: produces N records of a fixed size as
//! fast as librdkafka allows, or reads a whole topic back, and prints one result line.
//!
//! ```text
//! load produce --bootstrap 127.0.0.1:9092 --topic t --records 500000 --size 100 --acks 1 \
//!      [--compression lz4] [--partitions 6]
//! load consume --bootstrap 127.0.0.1:9092 --topic t --records 500000
//! load latency --bootstrap 127.0.0.1:9092 --topic t --rate 1000 --seconds 10 --size 100
//! ```
//! Output: `<mode> records=N bytes=B seconds=S records_per_s=R mb_per_s=M errors=E` (for
//! `produce` also `produce_requests=N`, the requests librdkafka sent), and for
//! `latency` the end-to-end (send → consumed) and ack (send → delivery report) percentiles in
//! milliseconds: `e2e_p50_ms=.. e2e_p99_ms=.. e2e_p999_ms=.. ack_p50_ms=.. ack_p99_ms=..`.
//! `--partitions N` creates the topic with N partitions first (CreateTopics), with
//! `--replication-factor R` replicas each (default 1) and the `--topic-config name=value`
//! settings; `load create` does only that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
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
    compression: String,
    partitions: i32,
    replication_factor: i32,
    rate: u64,
    seconds: u64,
    /// `name=value` topic configs for the topic this run creates.
    topic_configs: Vec<(String, String)>,
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
        compression: "none".into(),
        partitions: 0,
        replication_factor: 1,
        rate: 1000,
        seconds: 10,
        topic_configs: Vec::new(),
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
            "--compression" => parsed.compression = value,
            "--partitions" => parsed.partitions = value.parse()?,
            "--replication-factor" => parsed.replication_factor = value.parse()?,
            "--rate" => parsed.rate = value.parse()?,
            "--seconds" => parsed.seconds = value.parse()?,
            "--topic-config" => {
                let (name, value) = value
                    .split_once('=')
                    .ok_or("--topic-config takes name=value")?;
                parsed.topic_configs.push((name.into(), value.into()));
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(parsed)
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Produce requests the client has sent, from its latest statistics.
    produce_requests: AtomicU64,
}

/// Producer context counting delivery reports; shares its counters with `main`.
struct Counting(Arc<Counters>);

impl ClientContext for Counting {
    /// librdkafka batches per partition until `linger.ms` or a full batch, but sends sooner
    /// when the broker drains requests promptly; records per request shows which happened
    /// (and what the client paid per request).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let sent: i64 = statistics
            .brokers
            .values()
            .filter_map(|broker| broker.req.get("Produce"))
            .sum();
        self.0
            .produce_requests
            .fetch_max(u64::try_from(sent).unwrap_or(0), Ordering::Relaxed);
    }
}

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

/// Creates the topic with `--partitions` partitions when asked to (an existing topic is fine).
fn create_topic(args: &Args) -> Result<()> {
    if args.partitions <= 0 {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut topic = NewTopic::new(
        &args.topic,
        args.partitions,
        TopicReplication::Fixed(args.replication_factor),
    );
    for (name, value) in &args.topic_configs {
        topic = topic.set(name, value);
    }
    let results = runtime.block_on(admin.create_topics([&topic], &AdminOptions::new()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("create topic {name}: {code}").into()),
        }
    }
    Ok(())
}

fn produce(args: &Args) -> Result<()> {
    create_topic(args)?;
    let context = Arc::new(Counters::default());
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000")
        .set("statistics.interval.ms", "100")
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
    // One more statistics interval, so the count includes the last requests.
    producer.poll(Duration::from_millis(150));
    let delivered = context.delivered.load(Ordering::Relaxed);
    let failed = context.failed.load(Ordering::Relaxed);
    report(
        &format!("produce acks={} size={}", args.acks, args.size),
        delivered,
        delivered * args.size as u64,
        elapsed,
        failed,
    );
    println!(
        "produce_requests={}",
        context.produce_requests.load(Ordering::Relaxed)
    );
    if failed > 0 {
        return Err(format!("{failed} deliveries failed").into());
    }
    if !args.topic_configs.is_empty() {
        // Shows whether retention deleted anything while the run produced.
        println!(
            "log_start_offsets={}",
            log_start_offsets(args, producer.client())?
        );
    }
    Ok(())
}

/// Sum over the topic's partitions of the earliest offset still readable.
fn log_start_offsets<C: ClientContext>(
    args: &Args,
    client: &rdkafka::client::Client<C>,
) -> Result<i64> {
    let metadata = client.fetch_metadata(Some(&args.topic), Duration::from_secs(10))?;
    let mut sum = 0;
    for topic in metadata.topics().iter().filter(|t| t.name() == args.topic) {
        for partition in topic.partitions() {
            let (low, _high) =
                client.fetch_watermarks(&args.topic, partition.id(), Duration::from_secs(10))?;
            sum += low;
        }
    }
    Ok(sum)
}

fn consume(args: &Args) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "runnel-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "1048576")
        // librdkafka pauses fetching for fetch.queue.backoff.ms once this many records wait
        // in its queue; the default (100,000) would make the client, not the broker, the limit.
        .set("queued.min.messages", "10000000")
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

/// Producer context recording, per delivered record, the time from send to delivery report.
struct AckTimes {
    start: Instant,
    ack_us: Mutex<Vec<u64>>,
}

impl ClientContext for AckTimes {}

impl ProducerContext for AckTimes {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: Box<u64>) {
        if result.is_ok() {
            let now_us = micros_since(self.start);
            if let Ok(mut times) = self.ack_us.lock() {
                times.push(now_us.saturating_sub(*sent_us));
            }
        }
    }
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Percentile (0..=1) of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us.get(rank).copied().unwrap_or(0) as f64 / 1000.0
}

/// Fixed-rate produce (acks as given, linger 0) with a consumer reading the same partition:
/// every payload carries its send time, so end-to-end latency is measured by one clock.
fn latency(args: &Args) -> Result<()> {
    let start = Instant::now();
    let context = AckTimes {
        start,
        ack_us: Mutex::new(Vec::new()),
    };
    let producer: ThreadedProducer<AckTimes> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "60000")
        .create_with_context(context)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "runnel-bench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.min.bytes", "1")
        .create()?;
    // Make the topic exist and start the consumer at its end before measuring.
    producer
        .send(
            BaseRecord::<(), [u8], Box<u64>>::with_opaque_to(&args.topic, Box::new(0))
                .partition(0)
                .payload(&[0u8; 8][..]),
        )
        .map_err(|(e, _)| format!("warm-up send: {e}"))?;
    producer.flush(Duration::from_secs(30))?;
    let (_, high) = consumer.fetch_watermarks(&args.topic, 0, Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&args.topic, 0, Offset::Offset(high))?;
    consumer.assign(&assignment)?;

    let total = args.rate.saturating_mul(args.seconds);
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let send_start = Instant::now();
    let deadline = send_start + Duration::from_secs(args.seconds) + args.timeout;
    // The consumer waits on its own thread (blocking polls, woken by the fetch response), and
    // this thread sleeps between sends: a client that spun would take a core from the broker
    // on a small machine and measure its own scheduling instead.
    let (sent, mut e2e_us) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut e2e_us = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            while (e2e_us.len() as u64) < total && Instant::now() < deadline {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                    let received_us = micros_since(start);
                    if let Some(stamp) = message.payload().and_then(|p| p.get(..8)) {
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(stamp);
                        e2e_us.push(received_us.saturating_sub(u64::from_be_bytes(bytes)));
                    }
                }
            }
            e2e_us
        });
        let mut payload = vec![b'x'; args.size.max(8)];
        let mut sent = 0u64;
        while sent < total && Instant::now() < deadline {
            let due = send_start + interval.mul_f64(sent as f64);
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
                continue;
            }
            let now_us = micros_since(start);
            if let Some(stamp) = payload.get_mut(..8) {
                stamp.copy_from_slice(&now_us.to_be_bytes());
            }
            let record =
                BaseRecord::<(), [u8], Box<u64>>::with_opaque_to(&args.topic, Box::new(now_us))
                    .partition(0)
                    .payload(&payload);
            match producer.send(record) {
                Ok(()) => sent += 1,
                // The local queue is full: give the client's threads a moment.
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        (sent, reader.join().unwrap_or_default())
    });
    producer.flush(Duration::from_secs(30))?;
    let elapsed = send_start.elapsed();
    e2e_us.sort_unstable();
    let mut ack_us = producer
        .context()
        .ack_us
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    ack_us.sort_unstable();
    println!(
        "latency acks={} rate={} records={} seconds={:.3} e2e_p50_ms={:.3} e2e_p99_ms={:.3} \
         e2e_p999_ms={:.3} ack_p50_ms={:.3} ack_p99_ms={:.3} ack_p999_ms={:.3} received={}",
        args.acks,
        args.rate,
        sent,
        elapsed.as_secs_f64(),
        percentile_ms(&e2e_us, 0.50),
        percentile_ms(&e2e_us, 0.99),
        percentile_ms(&e2e_us, 0.999),
        percentile_ms(&ack_us, 0.50),
        percentile_ms(&ack_us, 0.99),
        percentile_ms(&ack_us, 0.999),
        e2e_us.len(),
    );
    if (e2e_us.len() as u64) < total {
        return Err(format!(
            "received {} of {total} records before the deadline",
            e2e_us.len()
        )
        .into());
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    match args.mode.as_str() {
        "produce" => produce(&args),
        "consume" => consume(&args),
        "latency" => latency(&args),
        "create" => create_topic(&args),
        other => Err(format!("unknown mode {other}: produce, consume, latency or create").into()),
    }
}
