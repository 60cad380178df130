#!/usr/bin/env python3
# Regenerates docs/configuration.md from the settings table (crates/runnel-broker/src/config.rs)
# and the topic config table (topic_config.rs). Run from the repository root after changing either;
# unit tests check that every name appears in the doc.
import re
src=open('crates/runnel-broker/src/config.rs').read()
rows=re.findall(r'Setting \{ name: "([^"]+)", default: "([^"]*)", doc: "((?:[^"\\]|\\.)*)" \}',src)
tc=re.sub(r'\s+',' ',open('crates/runnel-broker/src/topic_config.rs').read()).replace('( ','(').replace(', )',')')
defs=re.findall(r'def\("([^"]+)", ValueType::([A-Za-z]+)(?:\((.*?)\))?, (true|false)\)',tc)
out=["# Configuration","",
"Runnel reads its settings, in increasing priority, from built-in defaults, a TOML file (`--config FILE`), environment variables and command-line flags. Names are Kafka's (`num.partitions`, `socket.request.max.bytes`, …).","",
"- **TOML file**: `num.partitions = 3`, or nested: `[log]` then `segment.bytes = 1000000`. Dotted keys and tables both become the dotted name.",
"- **Environment**: `RUNNEL_` + the name in capitals, with `_` or `__` for the dots: `RUNNEL_NUM_PARTITIONS=3`, `RUNNEL_LOG__SEGMENT_BYTES=1000000`. Every `RUNNEL_*` variable must name a setting.",
"- **Flags**: `--listen`, `--advertise`, `--data-dir`, `--node-id` are shorthands; `--set NAME=VALUE` (repeatable) sets anything.",
"- An **unknown name is an error** at start-up (one line naming it and where it came from), as is a value of the wrong type or out of range.","",
"Logging is not a setting: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` prints JSON lines.","",
"## Broker settings","","| name | default | what it does |","|---|---|---|"]
for n,d,doc in rows:
    out.append("| `%s` | `%s` | %s |" % (n,d,doc))
out+=["","## Topic configs","",
"Accepted by CreateTopics, AlterConfigs and IncrementalAlterConfigs (changes are persisted and applied without a restart). Unknown names and bad values get `INVALID_CONFIG` with a message naming them. *Applied* configs change how Runnel stores the topic today; the others are validated, stored and reported so that tools which set them keep working. DescribeConfigs shows every config's value in effect and its source (topic override, broker setting given explicitly, or default).","",
"| name | accepts | applied |","|---|---|---|"]
for n,t,arg,applied in defs:
    words=arg.replace('&[','').replace(']','').replace('"','') if arg else ''
    desc={'Long':'integer ≥ %s'%arg,'Int':'32-bit integer ≥ %s'%arg,'Ratio':'0.0–1.0','Bool':'true/false','OneOf':'one of '+words,'ListOf':'comma-separated list of '+words}[t]
    out.append("| `%s` | %s | %s |" % (n,desc,'yes' if applied=='true' else 'stored, not yet applied'))
out+=["","Topic defaults come from the broker settings: `segment.bytes` ← `log.segment.bytes`, `segment.ms` ← `log.roll.ms`, `index.interval.bytes` ← `log.index.interval.bytes`, `segment.index.bytes` ← `log.index.size.max.bytes`, `max.message.bytes` ← `message.max.bytes`, `retention.ms` ← `log.retention.ms`, `retention.bytes` ← `log.retention.bytes`, `flush.ms` ← `log.flush.interval.ms` (100 ms, where Kafka's is unbounded). The others default as in Kafka: `cleanup.policy` delete, `delete.retention.ms` 86400000, `min.cleanable.dirty.ratio` 0.5, `min.compaction.lag.ms` 0, `max.compaction.lag.ms`, `flush.messages` and the timestamp bounds unbounded (9223372036854775807), `message.timestamp.type` CreateTime; stored but not applied: `compression.type` producer, `min.insync.replicas` 1, `preallocate` false, `segment.jitter.ms` 0, `unclean.leader.election.enable` false, `file.delete.delay.ms` 60000.",""]
open('docs/configuration.md','w').write("\n".join(out))
