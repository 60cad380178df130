//! InitProducerId (key 22), v0–4: a fresh producer id (epoch 0) for idempotent producers.
//! Transactional ids need the transaction coordinator, which does not exist yet: they get
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53), one of the codes librdkafka and the Java client
//! treat as fatal for `init_transactions()` (INVALID_REQUEST would be retried forever), and the
//! broker logs a WARN naming the transactional id.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

pub(crate) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: InitProducerIdRequest,
) -> Result<InitProducerIdResponse, BrokerError> {
    let allocated = match request.transactional_id {
        Some(_)
            if i64::from(request.transaction_timeout_ms)
                > broker.config.transaction_max_timeout_ms =>
        {
            Err(BrokerError::InvalidTransactionTimeout {
                timeout_ms: request.transaction_timeout_ms,
                max_ms: broker.config.transaction_max_timeout_ms,
            })
        }
        Some(transactional_id) => {
            let error = BrokerError::TransactionsUnsupported(transactional_id.to_string());
            tracing::warn!(client = ?context.client_id, %error, "InitProducerId refused");
            Err(error)
        }
        // Idempotent producers always get a new id (Kafka does the same, even when the request
        // names a previous id and epoch): the old id's sequence state stays valid for retries.
        None => allocate(broker).await,
    };
    Ok(match allocated {
        Ok(producer_id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0),
        Err(error) => InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    })
}

async fn allocate(broker: &Broker) -> Result<i64, BrokerError> {
    broker.producer_ids.next().await
}
