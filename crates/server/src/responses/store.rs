//! The in-memory store of responses behind `previous_response_id` and
//! `GET`/`DELETE /v1/responses/{id}`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mlx_harmony_core::chat_template::ChatMessage;
use serde_json::Value;

use crate::error::ApiError;

/// How long a stored response is kept, and how many at most.
const STORE_TTL: Duration = Duration::from_secs(3600);
const STORE_CAPACITY: usize = 1024;

/// A stored response: what `GET` returns, and the conversation it ended
/// (its input and its output) for a request that continues it.
struct Stored {
    response: Value,
    conversation: Vec<ChatMessage>,
    at: Instant,
}

/// Responses kept for `previous_response_id` and `GET /v1/responses/{id}`:
/// at most [`STORE_CAPACITY`], each for [`STORE_TTL`]; the oldest go first.
#[derive(Default)]
pub struct ResponseStore {
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
}

impl ResponseStore {
    pub(super) fn insert(&self, id: String, response: Value, conversation: Vec<ChatMessage>) {
        let mut guard = self.inner.lock().expect("not poisoned");
        let (map, order) = &mut *guard;
        Self::expire(map, order);
        while map.len() >= STORE_CAPACITY {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            map.remove(&oldest);
        }
        order.push_back(id.clone());
        map.insert(
            id,
            Stored {
                response,
                conversation,
                at: Instant::now(),
            },
        );
    }

    fn expire(map: &mut HashMap<String, Stored>, order: &mut VecDeque<String>) {
        while let Some(oldest) = order.front() {
            match map.get(oldest) {
                Some(s) if s.at.elapsed() < STORE_TTL => break,
                _ => {
                    let id = order.pop_front().expect("front exists");
                    map.remove(&id);
                }
            }
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<(Value, Vec<ChatMessage>)> {
        let mut guard = self.inner.lock().expect("not poisoned");
        let (map, order) = &mut *guard;
        Self::expire(map, order);
        map.get(id)
            .map(|s| (s.response.clone(), s.conversation.clone()))
    }

    pub(super) fn remove(&self, id: &str) -> bool {
        let mut guard = self.inner.lock().expect("not poisoned");
        let (map, order) = &mut *guard;
        order.retain(|o| o != id);
        map.remove(id).is_some()
    }
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        code: Some("not_found"),
        ..ApiError::invalid(format!(
            "no response with id {id:?}: responses are kept in memory for an hour (at most \
             {STORE_CAPACITY}), only when `store` is not false, and are lost when the server restarts"
        ))
    }
}
