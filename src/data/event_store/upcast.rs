//! Schema evolution: every event type has a current schema version; an upcaster turns a
//! payload of one version into the next, and reads chain them up to the current shape. Stored
//! rows are never rewritten.

use std::collections::HashMap;
use std::sync::Arc;

type Upcaster = Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

/// The current schema version of each event type and the steps from older ones.
#[derive(Clone, Default)]
pub struct Upcasters {
    current: HashMap<String, i32>,
    steps: HashMap<(String, i32), Upcaster>,
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `event_type`'s current schema version (1 when never declared).
    pub fn current(mut self, event_type: &str, version: i32) -> Self {
        self.current.insert(event_type.to_string(), version);
        self
    }

    /// Registers the step that turns `event_type` version `from` into version `from + 1`.
    pub fn step<F>(mut self, event_type: &str, from: i32, f: F) -> Self
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    {
        self.steps
            .insert((event_type.to_string(), from), Arc::new(f));
        self
    }

    /// The current schema version of `event_type`.
    pub fn version_of(&self, event_type: &str) -> i32 {
        self.current.get(event_type).copied().unwrap_or(1)
    }

    /// `payload` (of `event_type` at `version`) in the current shape, with its version. A
    /// version newer than this code knows, or a missing step, is an error naming both.
    pub fn upcast(
        &self,
        event_type: &str,
        version: i32,
        mut payload: serde_json::Value,
    ) -> Result<(i32, serde_json::Value), String> {
        let target = self.version_of(event_type);
        if version > target {
            return Err(format!(
                "{event_type} v{version} is newer than this code knows (v{target})"
            ));
        }
        let mut v = version;
        while v < target {
            let step = self
                .steps
                .get(&(event_type.to_string(), v))
                .ok_or_else(|| format!("no upcaster for {event_type} v{v} -> v{}", v + 1))?;
            payload = step(payload).map_err(|e| format!("{event_type} v{v} -> v{}: {e}", v + 1))?;
            v += 1;
        }
        Ok((v, payload))
    }
}
