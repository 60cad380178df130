//! The network side: the accept loop, one task per connection, graceful shutdown.

mod connection;
mod connection_limits;
mod listener;
mod shutdown;

pub use listener::run;
