//! Outgoing notifications: one JSON POST with bounded time.

use std::time::Duration;

use anyhow::{anyhow, Result};

/// POSTs `body` to `url`; any non-2xx answer is an error naming it.
pub fn post_json(url: &str, body: &serde_json::Value) -> Result<()> {
    let agent =
        ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout(Duration::from_secs(15)).build();
    match agent.post(url).send_json(body.clone()) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(anyhow!("the notification endpoint answered HTTP {code}")),
        Err(e) => Err(anyhow!("the notification could not be sent: {e}")),
    }
}
