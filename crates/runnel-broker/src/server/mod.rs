//! The network side: the accept loop, one task per connection, graceful shutdown.

mod connection;
mod listener;
mod shutdown;

pub use listener::run;
