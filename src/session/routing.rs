//! Routing of traffic that belongs to a request running somewhere: the client's answers to
//! server→client requests and `notifications/cancelled`. In single-node mode everything is in this node's tables; in Redis mode a miss here
//! is forwarded through the store's signal bus to the node that holds the waiting request.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The client's answer to a server→client request: `Ok(result)` or `Err(error object)`.
pub type ClientAnswer = Result<Value, Value>;

/// The wire form of an answer forwarded between nodes: `{"result": …}` or `{"error": …}`.
pub fn answer_wire(answer: &ClientAnswer) -> Value {
    match answer {
        Ok(r) => serde_json::json!({ "result": r }),
        Err(e) => serde_json::json!({ "error": e }),
    }
}

/// The inverse of [`answer_wire`]; anything without a `result` is an error answer.
pub fn answer_of(mut wire: Value) -> ClientAnswer {
    match wire.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => Err(wire
            .get_mut("error")
            .map(Value::take)
            .unwrap_or(Value::Null)),
    }
}

/// An answer as it reaches the waiting request, with the `traceparent` of the span that
/// received it from the client (on this node or another), for a linked span.
pub type Delivered = (ClientAnswer, Option<String>);

/// This node's routing tables. Keys are `(session id, JSON text of the request id)`.
#[derive(Default)]
pub struct LocalRoutes {
    pending: Mutex<HashMap<(String, String), oneshot::Sender<Delivered>>>,
    inflight: Mutex<HashMap<(String, String), CancellationToken>>,
}

/// The key text of a JSON-RPC id (`1` and `"1"` are different ids).
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

impl LocalRoutes {
    /// Registers a server→client request and returns the receiver of its answer.
    pub fn expect_answer(&self, session: &str, id: &Value) -> oneshot::Receiver<Delivered> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .insert((session.to_owned(), id_key(id)), tx);
        rx
    }

    /// Forgets a server→client request (answered, timed out or abandoned).
    pub fn forget_answer(&self, session: &str, id: &Value) {
        self.pending
            .lock()
            .remove(&(session.to_owned(), id_key(id)));
    }

    /// Delivers a client's answer, received by the span `producer`; `false` if no request
    /// here waits for it.
    pub fn deliver_answer(
        &self,
        session: &str,
        id: &Value,
        answer: ClientAnswer,
        producer: Option<String>,
    ) -> bool {
        let tx = self
            .pending
            .lock()
            .remove(&(session.to_owned(), id_key(id)));
        match tx {
            Some(tx) => tx.send((answer, producer)).is_ok(),
            None => false,
        }
    }

    /// Registers an in-flight client request so that `notifications/cancelled` can stop it.
    pub fn start_request(&self, session: &str, id: &Value, token: CancellationToken) {
        self.inflight
            .lock()
            .insert((session.to_owned(), id_key(id)), token);
    }

    /// Unregisters a finished request.
    pub fn finish_request(&self, session: &str, id: &Value) {
        self.inflight
            .lock()
            .remove(&(session.to_owned(), id_key(id)));
    }

    /// Cancels an in-flight request; `false` if it is not running here.
    pub fn cancel_request(&self, session: &str, id: &Value) -> bool {
        match self.inflight.lock().get(&(session.to_owned(), id_key(id))) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}
