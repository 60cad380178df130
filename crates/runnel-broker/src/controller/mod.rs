//! The active controller's decisions: pure functions from the metadata image (and a request, or
//! the clock) to metadata records and a reply. No I/O here: the service that feeds requests in
//! and proposes the records lives in `service.rs`. Design: docs/cluster.md, "The controller".
